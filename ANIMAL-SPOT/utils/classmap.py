"""The one place that knows a model's classes: names, indices, and whether it is a
binary detector.

The original's rule (spec §3.4): classes are sorted by code point; with exactly two,
``target`` is 1 and the other class 0 (a binary target/noise detector); with more, the
index is the position in the sorted list. A model file stores the mapping as the
original's ``classes`` dict.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

DEFAULT_BINARY = {"noise": 0, "target": 1}


def binary_count(num_classes: int) -> bool:
    """The original's rule, in one place: two classes make a target/noise detector."""
    return num_classes == 2


@dataclass(frozen=True)
class ClassMap:
    """``mapping`` is the stored dict (name -> index, in its stored order)."""

    mapping: Tuple[Tuple[str, int], ...]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "ClassMap":
        """The original's mapping of the given (normally sorted) class names."""
        names = list(names)
        if binary_count(len(names)):
            return cls(tuple((name, int(name == "target")) for name in names))
        return cls(tuple((name, index) for index, name in enumerate(names)))

    @classmethod
    def from_dict(cls, classes: Mapping[str, int]) -> "ClassMap":
        return cls(tuple((str(name), int(index)) for name, index in classes.items()))

    def to_dict(self) -> Dict[str, int]:
        return dict(self.mapping)

    def __len__(self) -> int:
        return max((index for _, index in self.mapping), default=-1) + 1

    @property
    def is_binary(self) -> bool:
        """A target/noise detector (two classes; positive class = index 1)."""
        return binary_count(len(self))

    @property
    def names(self) -> List[str]:
        """Name of each index, in index order (the first name wins where several share one)."""
        names = [None] * len(self)
        for name, index in self.mapping:
            if names[index] is None:
                names[index] = name
        return [name if name is not None else str(i) for i, name in enumerate(names)]

    def index(self, name: str) -> int:
        for known, index in self.mapping:
            if known == name:
                return index
        raise KeyError(f"unknown class {name!r}; the classes are {', '.join(n for n, _ in self.mapping)}")

    def name_of(self, index: int) -> str:
        return self.names[index]

    @property
    def noise_index(self):
        """Index of the class called ``noise`` (any case), or None."""
        for name, index in self.mapping:
            if name.lower() == "noise":
                return index
        return None

    def same_classes(self, other: "ClassMap") -> bool:
        return self.to_dict() == other.to_dict()

    def describe_difference(self, other: "ClassMap") -> str:
        mine, theirs = self.to_dict(), other.to_dict()
        only_mine = sorted(set(mine) - set(theirs))
        only_theirs = sorted(set(theirs) - set(mine))
        moved = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
        parts = []
        if only_mine:
            parts.append("only in the first: " + ", ".join(only_mine))
        if only_theirs:
            parts.append("only in the second: " + ", ".join(only_theirs))
        if moved:
            parts.append("different indices: " + ", ".join(moved))
        return "; ".join(parts) or "the same classes"


def check_class_count(names: Sequence[str], num_classes: int) -> None:
    """The data's classes against ``--num_classes`` (with the binary-run rule)."""
    if num_classes < 2:
        raise ValueError(f"--num_classes {num_classes} is not a valid number of classes (need >= 2)")
    if len(names) != num_classes:
        raise ValueError(f"--num_classes is {num_classes} but the data holds {len(names)} class(es): "
                         + ", ".join(names))
    if binary_count(num_classes) and "target" not in names:
        raise ValueError("a binary run needs the classes 'target' and 'noise' (found: "
                         + ", ".join(names) + "); rename the files or use more classes")
