"""A deliberately misbehaving model for QA tests (loaded only with --trust)."""

import time

import numpy as np


class SlowModel:
    def predict(self, X):
        time.sleep(600)
        return np.zeros(len(X))


class CrashingModel:
    def predict(self, X):
        import os

        os._exit(9)
