"""Helpers shared by the benchmark tables that set moessm beside the peer (moe_vs_peer.py,
dense_vs_peer.py): nested lookups that tolerate missing figures, and their formatting."""


def get(d, *path):
    """d[path[0]][path[1]]...; None when any level is missing."""
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def fmt(x, spec="{:.3f}"):
    return "-" if x is None else spec.format(x)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b
