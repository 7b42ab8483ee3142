"""When an error raised while evaluating a log density is a property of the point, not a bug.

One rule for every engine: the samplers reject such a point (a divergence), the optimisers'
line search treats it as a wall, and a Hessian there is NaN. Anything else is re-raised, since
swallowing it would hide a mistake in the program behind a chain or an optimiser that never
moves; where every point raises (a bug that looks numerical), the engines re-raise too (the
samplers when no chain can be evaluated, the optimisers at their starting point).
"""

from __future__ import annotations

import os

import torch

import bayesgen

__all__ = ["NUMERICAL_ERRORS", "is_numerical_error"]

#: Exceptions that a density may raise at a point where it is not defined numerically: torch's
#: linear algebra (``torch.linalg.cholesky``'s ``_LinAlgError`` is a ``RuntimeError``), a
#: distribution's argument validation (``ValueError``), overflow in Python arithmetic.
NUMERICAL_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, ArithmeticError)
#: Subclasses of those that are programming or resource errors, never a property of the point.
_NOT_NUMERICAL: tuple[type[BaseException], ...] = (
    NotImplementedError, RecursionError, getattr(torch, "OutOfMemoryError", MemoryError))
#: Folders of bayesgen's own modules: an error raised by bayesgen's own checks (a latent site that
#: appears in one run only, a wrong batch shape) describes the program, not the point.
_OWN_CODE = tuple(os.path.dirname(os.path.abspath(path)) + os.sep for path in (bayesgen.__file__, __file__))


def is_numerical_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised while evaluating a log density, marks a point where the density is
    not defined (a rejected proposal, as Stan treats ``std::domain_error``) rather than a bug.

    Numerical: :data:`NUMERICAL_ERRORS` raised inside torch, Pyro or the user's program
    (a Cholesky factor of a matrix that is not positive definite, a distribution built with
    ``validate_args=True`` from an invalid parameter). Not numerical: ``TypeError``,
    ``KeyboardInterrupt`` and other exceptions outside those classes, ``NotImplementedError``,
    ``RecursionError``, running out of memory, and any error raised by bayesgen's own code (its
    checks of the program's structure). A bug that raises a ``RuntimeError`` at every point is
    told apart by ``_guard.GuardedDensity``, which re-raises when no point can be evaluated.
    """
    if not isinstance(exc, NUMERICAL_ERRORS) or isinstance(exc, _NOT_NUMERICAL):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is None or not os.path.abspath(frame.tb_frame.f_code.co_filename).startswith(_OWN_CODE)
