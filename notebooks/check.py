"""Execute the notebooks in a real Jupyter kernel; fail on an error or on outputs gone stale.

    uv run --group notebooks python notebooks/check.py           # what CI runs
    uv run --group notebooks python notebooks/check.py --update  # re-execute and save outputs

Each notebook runs in its own ``ipykernel`` kernel, started with this interpreter (so with the
project's environment, whatever kernels Jupyter knows of elsewhere), with ``notebooks/`` as its
working directory, as ``jupyter lab notebooks/`` would have it. The check fails when a cell
raises, and when the *structure* of a code cell's outputs differs from the committed notebook:
a cell that gains or loses an output, an image, an HTML display, a stream, or whose outputs
change type. Text, numbers and pixels may differ (the notebooks measure real time), so they are
not compared.

``--update`` writes the executed notebooks back, and the figure of the cell tagged
``readme-figure`` (in ``02-operators.ipynb``) to ``docs/marbles.png``, the README's picture.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]-*.ipynb"))
README_FIGURE = ("readme-figure", HERE.parent / "docs" / "marbles.png")
CELL_TIMEOUT = 120  # seconds; the notebooks take a few seconds each
ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # in the kernel's tracebacks

type Shape = tuple[str, ...]


def kernel_specs(directory: Path) -> KernelSpecManager:
    """A ``python3`` kernel spec that runs ``ipykernel`` on this very interpreter."""
    spec = directory / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (ipykernel)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return KernelSpecManager(kernel_dirs=[str(directory)])


def output_shape(output: Any) -> str:
    """What kind of output this is, without its content."""
    kind = output["output_type"]
    if kind == "stream":
        return f"stream:{output['name']}"
    if kind == "error":
        return f"error:{output['ename']}"
    return f"{kind}:{'+'.join(sorted(output.get('data', {})))}"


def cell_shapes(notebook: Any) -> list[Shape]:
    """Per code cell, its outputs' kinds in order (consecutive streams counted once)."""
    shapes: list[Shape] = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kinds: list[str] = []
        for output in cell.outputs:
            kind = output_shape(output)
            if not (kind.startswith("stream:") and kinds and kinds[-1] == kind):
                kinds.append(kind)
        shapes.append(tuple(kinds))
    return shapes


def differences(committed: Any, executed: Any) -> list[str]:
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    problems: list[str] = []
    for number, (cell, before, after) in enumerate(
        zip(code, cell_shapes(committed), cell_shapes(executed), strict=True), start=1
    ):
        if before != after:
            first_line = cell.source.splitlines()[0] if cell.source else ""
            problems.append(
                f"code cell {number} ({first_line!r}): committed outputs {list(before)}, "
                f"now {list(after)}"
            )
    return problems


def strip_volatile_metadata(notebook: Any) -> None:
    """Keep committed notebooks free of churn that is not content (timings, widget state)."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)


async def execute(path: Path, specs: KernelSpecManager, runtime: Path) -> tuple[Any, float]:
    notebook = nbformat.read(path, as_version=4)
    manager = AsyncKernelManager(
        kernel_name="python3",
        kernel_spec_manager=specs,
        # Local sockets in our temporary directory rather than TCP ports.
        transport="ipc",
        connection_file=str(runtime / f"{path.stem}.json"),
    )
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        record_timing=False,
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    await client.async_execute(cleanup_kc=True)  # and shut the kernel down
    return notebook, time.perf_counter() - started


def save_readme_figure(notebook: Any) -> None:
    tag, target = README_FIGURE
    for cell in notebook.cells:
        if tag in cell.metadata.get("tags", []):
            for output in cell.outputs:
                if "image/png" in output.get("data", {}):
                    target.write_bytes(base64.b64decode(output["data"]["image/png"]))
                    print(f"wrote {target.relative_to(HERE.parent)}")
                    return
            raise SystemExit(f"the cell tagged {tag!r} drew no PNG")


async def check(paths: list[Path], update: bool) -> int:
    failed = False
    with tempfile.TemporaryDirectory(prefix="tinybus-kernels-") as directory:
        specs = kernel_specs(Path(directory, "kernels"))
        # One kernel per notebook, all at once: most of the time is kernel start-up and sleeps.
        results = await asyncio.gather(
            *(execute(path, specs, Path(directory)) for path in paths), return_exceptions=True
        )
    for path, result in zip(paths, results, strict=True):
        name = path.relative_to(HERE.parent)
        if isinstance(result, CellExecutionError):
            print(f"FAIL {name}: a cell raised\n{ANSI_COLOURS.sub('', str(result))}")
            failed = True
            continue
        if isinstance(result, BaseException):
            print(f"FAIL {name}: {type(result).__name__}: {result}")
            failed = True
            continue
        executed, seconds = result
        committed = nbformat.read(path, as_version=4)
        if update:
            strip_volatile_metadata(executed)
            nbformat.validate(executed)
            nbformat.write(executed, path)
            if any(README_FIGURE[0] in cell.metadata.get("tags", []) for cell in executed.cells):
                save_readme_figure(executed)
            print(f"updated {name} ({seconds:.1f} s)")
            continue
        problems = differences(committed, executed)
        if problems:
            failed = True
            print(f"FAIL {name}: outputs changed shape; if that is intended, run")
            print("  uv run --group notebooks python notebooks/check.py --update")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok   {name} ({seconds:.1f} s)")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN-*.ipynb")
    parser.add_argument(
        "--update", action="store_true", help="save the outputs instead of comparing them"
    )
    arguments = parser.parse_args()
    paths = [path.resolve() for path in arguments.notebooks] or NOTEBOOKS
    if not paths:
        print("no notebooks found")
        return 1
    return asyncio.run(check(paths, arguments.update))


if __name__ == "__main__":
    sys.exit(main())
