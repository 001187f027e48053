"""Examples and tasks (built-in, or data sources: Hugging Face datasets, dataset folders, data
files), chat-templated tokenization with loss masks on assistant turns, and resumable batching."""

from headjax.data.answers import extract_answer, extract_number
from headjax.data.batching import Batcher, bucket_length, default_buckets, pack_rows
from headjax.data.example import (
    Example,
    Task,
    answer_grader,
    numbers_equal,
    split_of,
    texts_equal,
)
from headjax.data.files import LoadedExamples, file_task, load_examples
from headjax.data.probe import example_batches, probe_batches
from headjax.data.rows import Fields, MalformedRowError, row_to_example
from headjax.data.sources import ExampleStream, is_source, parse_source, source_task
from headjax.data.tasks import (
    get_task,
    list_tasks,
    reasoning_gym_task,
    register_sources,
    register_task,
)
from headjax.data.tokenize import (
    ExampleTooLongError,
    chat_messages,
    chat_prompt,
    tokenize_example,
    tokenize_examples,
)

__all__ = [
    "Batcher",
    "Example",
    "ExampleStream",
    "ExampleTooLongError",
    "Fields",
    "LoadedExamples",
    "MalformedRowError",
    "Task",
    "answer_grader",
    "bucket_length",
    "chat_messages",
    "chat_prompt",
    "example_batches",
    "default_buckets",
    "extract_answer",
    "extract_number",
    "file_task",
    "get_task",
    "is_source",
    "list_tasks",
    "load_examples",
    "numbers_equal",
    "pack_rows",
    "parse_source",
    "probe_batches",
    "reasoning_gym_task",
    "register_sources",
    "register_task",
    "row_to_example",
    "source_task",
    "split_of",
    "texts_equal",
    "tokenize_example",
    "tokenize_examples",
]
