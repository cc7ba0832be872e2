"""Early stopping counted in validations, as the original (equal scores count as
improvement; stop after ``patience + 1`` consecutive worse validations)."""


class EarlyStoppingCriterion:
    def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0):
        assert mode in ("max", "min")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self._count, self._best_score, self.is_improved = 0, None, None

    def step(self, score: float) -> bool:
        """Record a validation score; True when training should stop."""
        if self._best_score is None:
            self._best_score, self.is_improved = score, True
            return False
        better = score >= self._best_score + self.min_delta if self.mode == "max" \
            else score <= self._best_score - self.min_delta
        if better:
            self._count, self._best_score, self.is_improved = 0, score, True
        else:
            self._count += 1
            self.is_improved = False
        return self._count > self.patience

    def state_dict(self) -> dict:
        return {"patience": self.patience, "mode": self.mode, "min_delta": self.min_delta,
                "_count": self._count, "_best_score": self._best_score, "is_improved": self.is_improved}

    def load_state_dict(self, state: dict):
        for key, value in state.items():
            setattr(self, key, value)
