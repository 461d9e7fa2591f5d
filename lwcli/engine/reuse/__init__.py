"""Reusers: scikit-learn-style estimators that put learnwares to work on a user's data.

======================  ==========================================  =============
method                  what it does                                 user labels
======================  ==========================================  =============
``single``              one learnware applied directly               no
``average``             mean / mean probability / vote, weighted     no
``with-user``           learnwares + the user's model, CV weights    yes
``job-selector``        routes each row to its learnware (eq. 8)     no
``feature-augment``     learnware outputs as extra features          yes
======================  ==========================================  =============
"""

from __future__ import annotations

from .base import Learnware, Reuser, check_learnwares
from .feature_augment import FeatureAugmentReuser
from .job_selector import JobSelectorReuser
from .simple import AverageReuser, SingleReuser
from .with_user import WithUserReuser

REUSERS: dict[str, type[Reuser]] = {
    "single": SingleReuser,
    "average": AverageReuser,
    "with-user": WithUserReuser,
    "job-selector": JobSelectorReuser,
    "feature-augment": FeatureAugmentReuser,
}
METHODS = tuple(REUSERS)


def make_reuser(method: str, learnwares, **params) -> Reuser:
    """A reuser by method name (one of :data:`METHODS`)."""
    from ...errors import UsageError

    if method not in REUSERS:
        raise UsageError(f"unknown reuse method {method!r}: expected one of {', '.join(METHODS)}",
                         "pick a method from lw reuse --help")
    return REUSERS[method](learnwares=list(learnwares), **params)


__all__ = ["Learnware", "Reuser", "check_learnwares", "make_reuser", "METHODS", "REUSERS",
           "SingleReuser", "AverageReuser", "WithUserReuser", "JobSelectorReuser",
           "FeatureAugmentReuser"]
