"""Structured pruning: channel groups (groups.py, channels.py, regroup.py), attention heads
(heads.py), cutting them (slicing.py), the removed-channels record (removed.py), and the pass
that scores, repairs and cuts (prune.py)."""
