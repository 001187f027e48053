"""The activation pattern's gradient graph computes no parameter gradients: `gate_gradients` is a
forward plus an activation-only backward. Checked on the traced program (`jax.make_jaxpr`) by its
matrix products (`dot_general`), against the loss forward and the full parameter gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from headjax.app.bench.models import synthetic_batch
from headjax.heads.scores import gate_gradients
from headjax.model import init, tiny_config
from headjax.model.loss import loss

BATCH, SEQ = 5, 7  # BATCH and BATCH * SEQ: sizes no other dimension of the model below has


def dot_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Output shapes of every `dot_general` in `jaxpr` and its sub-programs (scan bodies, ...)."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                if hasattr(sub, "eqns"):
                    shapes += dot_shapes(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    shapes += dot_shapes(sub.jaxpr)
    return shapes


@pytest.mark.parametrize("scan_layers", [True, False])
def test_gate_gradients_compute_no_parameter_gradients(scan_layers):
    config = tiny_config(vocab_size=96, d_model=40, ffn_dim=56, num_layers=3,
                         scan_layers=scan_layers)
    params = init(jax.random.key(0), config)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, BATCH, SEQ))
    trace = lambda fn, *args: dot_shapes(jax.make_jaxpr(fn)(*args).jaxpr)
    forward = trace(lambda p, b: loss(p, b, config), params, batch)
    gates = trace(lambda p, b: gate_gradients(p, b, config), params, batch)
    gates_constant_params = trace(lambda b: gate_gradients(params, b, config), batch)
    full = trace(jax.grad(lambda p, b: loss(p, b, config)), params, batch)

    # Parameters passed as arguments give the same program as parameters closed over as
    # constants: nothing is differentiated with respect to them.
    assert gates == gates_constant_params
    # A weight gradient sums over the batch, so its product has no batch (or, for the 2-D
    # projections, token) axis; the full gradient has such products, the gate gradient none.
    activation = lambda shape: shape[0] in (BATCH, BATCH * SEQ)  # noqa: E731
    assert not all(activation(shape) for shape in full)
    assert all(activation(shape) for shape in gates)
    # Backward = at most one product per forward product (the input's cotangent) plus one more
    # per attention product (scores and values: both operands are activations); attention
    # products are the rank-5 ones here ([b, kv, group, q, k] and [b, kv, hd, group, q]).
    # Scanned layers share one body, so every layer's backward is complete; unrolled, the first
    # layer's attention and q/k/v backward is dropped (no gate lies before it): 7 products fewer.
    attention = sum(len(shape) == 5 for shape in forward)
    assert attention == 2 * (1 if scan_layers else config.num_layers)
    assert gates[:len(forward)] == forward
    assert len(gates) == 2 * len(forward) + attention - (0 if scan_layers else 7)
    assert len(full) > len(gates)
