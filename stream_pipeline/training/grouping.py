"""Grouping near-duplicate images before a train/val/test split, shared by both training packages."""

from __future__ import annotations


class UnionFind:
    """Disjoint sets over 0..n-1. A group is named by its smallest member, so group ids (and the
    splits built from them) do not depend on the order in which pairs are joined."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps chains short
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[int]:
        """Group id (smallest member) per item."""
        return [self.find(i) for i in range(len(self.parent))]
