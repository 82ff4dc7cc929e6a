"""Every module of the package and of surrogates/ opens with a docstring
that says where it sits in the flow (the repository's rule; STYLE.md 13)."""

import ast
import os

from autoscout_jax.bench.tasks import repo_root


def test_every_module_says_where_it_sits():
  root = repo_root()
  missing = []
  for d in ("autoscout_jax", "surrogates"):
    for base, _, files in os.walk(os.path.join(root, d)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(base, f)
          doc = ast.get_docstring(ast.parse(open(path).read(), path)) or ""
          if "Where it sits" not in doc:
            missing.append(os.path.relpath(path, root))
  assert not missing, f"modules without a 'Where it sits' opening docstring: {sorted(missing)}"
