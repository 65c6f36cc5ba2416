"""One helper for the tools that plot (plot.py, study.py): Debian's matplotlib lives in
/usr/bin/python3, and a pyenv / venv python3 first on PATH lacks it. reexec_if_no_matplotlib()
runs the calling script again under Debian's interpreter (os.execv: no shell involved), once."""
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
