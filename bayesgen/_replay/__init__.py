"""Record a tensor function once as a graph of ATen operations, then replay it.

A log density with static control flow performs the same sequence of tensor operations at every
point of a given batch shape; only the numbers change. :func:`record` runs such a function once
under ``torch.fx``'s ``make_fx``, which keeps the ATen operations (the autograd backward pass
included) and drops every Python-level step around them — Pyro's handler stack, distribution
constructors, support transforms. Replaying the graph computes the same values with the same
kernels, so it is bitwise identical to the eager function, only cheaper; :func:`script` makes it
cheaper still by running it in TorchScript's interpreter. A sampler's whole leapfrog step may
also have its broadcast products summed over a dimension turned into matrix products
(``record(..., contract=True)``, used by :class:`Fused`), which reorders sums.

A recording is only trusted after :func:`agrees` compared it with the eager function at points
other than the one it was recorded at: a function whose operations depend on the values it sees
(Python ``if`` on a tensor, ``.item()``) either fails to record or disagrees there, and callers
then keep the eager function.

The package's modules, by how stable what they use is:

- :mod:`~bayesgen._replay.recording`: recording with ``make_fx`` (public torch, in a tracing
  context from ``torch._guards`` that spares it a fake tensor mode per value) and comparing outputs;
- :mod:`~bayesgen._replay.rewrites`: value-preserving rewrites of a recorded graph (ours);
- :mod:`~bayesgen._replay.inductor`: compiling with TorchInductor's private interfaces, with the
  torch versions they were checked on;
- :mod:`~bayesgen._replay.saved`: Inductor's compiled programs saved by the graph they compile,
  for the next process (it reads Inductor's cache folder and configuration and loads the modules
  Inductor writes: private interfaces too, checked with :mod:`~bayesgen._replay.inductor`'s);
- :mod:`~bayesgen._replay.runtime`: when to record, how to replay, when to fall back;
- :mod:`~bayesgen._replay.fallback`: saying that a fast path is not available.
"""

from bayesgen._replay.inductor import VECTORIZE_MIN_LOOP, compile_graph
from bayesgen._replay.recording import agrees, record, tracing
from bayesgen._replay.runtime import PROBE_SCALES, RECORD_AFTER, Fused, Replayed, layout_of, script

__all__ = ["PROBE_SCALES", "RECORD_AFTER", "VECTORIZE_MIN_LOOP", "Fused", "Replayed", "agrees", "compile_graph",
           "layout_of", "record", "script", "tracing"]
