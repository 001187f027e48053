"""The schema: every key a run config may set, with its default (see headjax.train.config)."""

from headjax.train.config import default_config


def get_config():
    return default_config()
