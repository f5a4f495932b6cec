"""Project layout rules that would otherwise break users silently."""

from support import ROOT


def test_data_directories_are_not_python_packages():
    """A top-level package named `tokenizers` would shadow Hugging Face's for everyone who has it."""
    for name in ("tokenizers", "pretrain", "finetune", "data_cards"):
        assert not (ROOT / name / "__init__.py").exists(), name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
