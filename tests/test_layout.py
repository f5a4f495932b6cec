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


def test_the_core_and_the_cli_import_without_ray():
    """Ray is the optional `scale` extra: importing the package, conversion and the CLI never needs it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None\n"  # None: any `import ray` raises ImportError
            "import unified_action, unified_action.data.convert, unified_action.data.loader, unified_action.cli\n"
            "import unified_action.data.ray_engine\n")  # the engine module itself imports Ray only when run
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_library_never_imports_the_cli():
    """Layers point one way (action_space -> ... -> demo -> cli): a library module importing the CLI drags typer and
    every command into a user's `import`, and ties the library to how the commands print."""
    import ast

    offenders = []
    for path in (ROOT / "unified_action").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "unified_action").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n == "unified_action.cli" or n.startswith("unified_action.cli.")]
    assert offenders == []
