"""The README's library example runs as printed (so it stays true)."""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_example(section: str) -> str:
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)[0]


# Appended to the example: the loss of the initial and of the trained parameters on one batch.
CHECK = """
initial = step.init_state(model, tx, batch, jax.random.key(0))
evaluate = jax.jit(step.make_eval_step(model, config.model.head, splits.num_classes))
print("losses", float(evaluate(initial.params, {}, batch)["loss"]), float(evaluate(state.params, {}, batch)["loss"]))
"""


def test_the_library_example_runs_and_learns():
    code = readme_example("Use as a library")
    assert len(code.strip().splitlines()) <= 20
    done = subprocess.run([sys.executable, "-c", code + CHECK], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    assert re.search(r"^loss [0-9.]+ ", done.stdout, re.M)  # the example's own line
    before, after = map(float, re.search(r"losses ([0-9.]+) ([0-9.]+)", done.stdout).groups())
    assert after < before
