"""scripts/mutants.py stays in step with the code: every mutant's snippet occurs exactly once in its file (a
refactor that moves a formula must move its mutant too), and each names tests that exist."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_mutants():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MUTANTS


def test_every_mutant_snippet_occurs_once_and_its_tests_exist():
    mutants = load_mutants()
    assert len(mutants) >= 80
    for name, (file, find, replace, tests) in mutants.items():
        text = (ROOT / file).read_text()
        assert text.count(find) == 1, (name, file, text.count(find))
        assert find != replace, name
        for t in tests.split():
            path, _, test = t.partition("::")
            assert (ROOT / path).is_file(), (name, path)
            assert f"def {test.split('[')[0]}(" in (ROOT / path).read_text(), (name, t)
