"""System tests run in csvlab guests: reuse the lab's pytest fixture."""
import importlib.util
import os

_LAB_CONFTEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "lab", "conftest.py")
_spec = importlib.util.spec_from_file_location("csvlab_conftest", _LAB_CONFTEST)
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)

lab = _mod.lab
pytest_configure = _mod.pytest_configure
pytest_runtest_makereport = _mod.pytest_runtest_makereport
