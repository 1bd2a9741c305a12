"""A dependency group's channel space and the tensors and constants that carry it.

A group has ``size`` channels. Each traced tensor carries some of them, in order, as
*segments* ``((start, length), ...)`` of the group's space: a producer's output carries
``((0, n),)``; a Concat along the channel axis carries its inputs' segments one after the
other (its inputs' groups appended into one space: DenseNet's and Inception's blocks, an
FPN's merged levels). A constant sliced on a tensor's channel axis (a consumer's input
channels, a BatchNormalization vector) records that tensor's segments, so the channels
kept in the group's space become the positions kept in that constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

Segments = tuple[tuple[int, int], ...]


def shift(segments: Segments, by: int) -> Segments:
    return tuple((start + by, length) for start, length in segments)


def coalesce(segments: tuple[tuple[int, int], ...]) -> Segments:
    """Adjacent runs as one: ((0, 4), (4, 8)) is ((0, 12),)."""
    out: list[tuple[int, int]] = []
    for start, length in segments:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((start, length))
    return tuple(out)


def spread(segments: Segments | None, values: np.ndarray, size: int) -> np.ndarray:
    """Per-position ``values`` of a tensor carrying ``segments``, summed per group channel."""
    if segments is None:
        return values
    total, position = np.zeros(size), 0
    for start, length in segments:
        total[start : start + length] += values[position : position + length]
        position += length
    return total


def width(segments: Segments) -> int:
    return sum(length for _, length in segments)


def local(segments: Segments | None, kept: np.ndarray) -> np.ndarray:
    """Positions (in a tensor carrying ``segments``) of the group channels ``kept``."""
    if segments is None:
        return kept
    parts, position = [], 0
    for start, length in segments:
        inside = kept[(kept >= start) & (kept < start + length)]
        parts.append(inside - start + position)
        position += length
    return np.concatenate(parts) if parts else kept[:0]


@dataclass
class Slot:
    """A constant tensor of the group sliced on ``axis`` (weights, biases, BN vectors)."""

    node: ir.Node
    index: int  # input index on ``node``
    axis: int
    per: int = 1  # elements per channel on ``axis`` (H*W after a Flatten)
    segments: Segments | None = None  # None: the group's whole space in order


@dataclass
class Group:
    """Channels removed together; ``size`` of them, ``blocked`` says why not when set."""

    size: int
    producers: list[ir.Node] = field(default_factory=list)
    consumers: list[ir.Node] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)  # sliced constant inputs
    values: dict[ir.Value, int] = field(default_factory=dict)  # traced tensor -> negative axis
    per: dict[ir.Value, int] = field(default_factory=dict)  # features a channel spans (if > 1)
    segments: dict[ir.Value, Segments] = field(default_factory=dict)  # of traced tensors
    # Segments of each producer's output channels and of each consumer's input (by id: a
    # Conv after a Concat can read the group's channels and make some of them).
    made: dict[int, Segments] = field(default_factory=dict)
    read: dict[int, Segments] = field(default_factory=dict)
    depthwise: list[tuple[ir.Node, Segments | None]] = field(default_factory=list)
    reshapes: list[tuple[ir.Node, int, Segments | None]] = field(default_factory=list)
    splits: list[tuple[ir.Node, list[Segments]]] = field(default_factory=list)  # per output
    # Slice on the channel axis: (node, entry in starts/ends, input segments, start, end).
    slices: list[tuple[ir.Node, int, Segments, int, int]] = field(default_factory=list)
    must: list[Segments] = field(default_factory=list)  # parts that keep >= 1 channel each
    blocked: str | None = None

    @property
    def name(self) -> str:
        return self.producers[0].name or "?" if self.producers else "?"

    def block(self, reason: str) -> None:
        if self.blocked is None:
            self.blocked = reason

    def made_by(self, node: ir.Node) -> Segments | None:
        return self.made.get(id(node))

    def read_by(self, node: ir.Node) -> Segments | None:
        return self.read.get(id(node))

    def must_keep(self) -> list[Segments]:
        """Channel sets that each keep at least one channel: every producer's output (a
        layer with no output channel is not a layer), every part of a Split."""
        return [self.made_by(n) or ((0, self.size),) for n in self.producers] + self.must

    def append(self, other: Group) -> None:
        """``other``'s channels follow this group's (a Concat joined them)."""
        by = self.size
        self.size += other.size
        self.producers += other.producers
        self.consumers += other.consumers
        self.values.update(other.values)
        self.per.update(other.per)
        for value, segs in other.segments.items():
            self.segments[value] = shift(segs, by)
        for key, segs in other.made.items():
            self.made[key] = shift(segs, by)
        for key, segs in other.read.items():
            self.read[key] = shift(segs, by)
        for slot in other.slots:
            slot.segments = shift(slot.segments or ((0, other.size),), by)
            self.slots.append(slot)
        self.depthwise += [(n, shift(s or ((0, other.size),), by)) for n, s in other.depthwise]
        self.reshapes += [(n, p, shift(s or ((0, other.size),), by)) for n, p, s in other.reshapes]
        self.splits += [(n, [shift(s, by) for s in parts]) for n, parts in other.splits]
        self.slices += [(n, i, shift(s, by), a, b) for n, i, s, a, b in other.slices]
        self.must += [shift(s, by) for s in other.must]
        if other.blocked:
            self.block(other.blocked)
