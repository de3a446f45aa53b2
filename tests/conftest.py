import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
for path in (TESTS, TESTS.parent):  # test helpers, and export_scripts/ as a package
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
