"""What the tools that plot (plot.py, study.py) share: reexec_if_no_matplotlib() (Debian's
matplotlib lives in /usr/bin/python3, and a pyenv / venv python3 first on PATH lacks it: the
calling script runs again under Debian's interpreter, os.execv, no shell, once) and ema()."""
import os
import sys


def reexec_if_no_matplotlib(script, flag):
    """script: the calling script's path; flag: an environment variable naming the re-run, so a
    Debian python without matplotlib does not loop."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        deb = "/usr/bin/python3"
        if (os.path.exists(deb) and os.path.realpath(sys.executable) != os.path.realpath(deb)
                and not os.environ.get(flag)):
            os.environ[flag] = "1"
            os.execv(deb, [deb, os.path.abspath(script)] + sys.argv[1:])


def ema(values, alpha=0.05):
    """Exponential moving average of a sequence (the first value starts it)."""
    out, m = [], None
    for v in values:
        m = v if m is None else (1 - alpha) * m + alpha * v
        out.append(m)
    return out
