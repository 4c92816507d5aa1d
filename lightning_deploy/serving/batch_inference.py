"""Batch inference from a manifest: rows of a Parquet file (or a folder of ``.npz``/``.npy``) in, Parquet out.

``lightning-deploy predict MANIFEST --input PATH --output DIR`` and :func:`predict`. Input
columns are named by the manifest's input leaves (``batch.x``), one row per item: a number
for a leaf that is ``[batch]``, else a fixed-shape tensor (pyarrow's ``fixed_shape_tensor``, or
nested lists). The output, ``DIR/predictions.parquet``, has the column ``row`` (the input row's
index) and one column per output leaf, in the input's order. The ``local`` engine streams
``batch_size`` rows at a time through ``load()`` (memory bounded by a batch, whatever the
file's size), with a progress bar; the ``ray`` engine runs the batches on Ray Data's actors and
writes the same file. The model's dim 0 must be its dynamic batch, every input's and output's
(``codec.batch_axis``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_deploy.artifact.contract import IOContract
from lightning_deploy.errors import ConfigurationError
from lightning_deploy.runtime.loading import load
from lightning_deploy.serving.codec import batch_axis

__all__ = ["ENGINES", "OUTPUT_FILE", "ROW", "in_row_order", "predict", "read_rows"]

OUTPUT_FILE = "predictions.parquet"
ROW = "row"  # the input row's index, in every output
ENGINES = ("local", "ray")
_BLOCKS_PER_ACTOR = 16


def predict(
    manifest: str | os.PathLike[str],
    input: str | os.PathLike[str],  # noqa: A002 - the command line's word
    output: str | os.PathLike[str],
    engine: str = "local",
    batch_size: int = 256,
    format: str | None = None,  # noqa: A002 - load()'s word
    device: str | None = None,
    progress: bool = True,
    address: str | None = None,
    actors: int = 2,
) -> Path:
    """Run every row of ``input`` through the artifact; returns ``output/predictions.parquet``.

    ``engine="ray"`` runs the batches on Ray Data (``address``'s cluster, else Ray on this
    machine): ``map_batches`` over a pool of ``actors`` actors, each holding the artifact opened
    by ``load()`` (a GPU each where ``device`` is CUDA), the order kept; the rows come back here
    and are written as ``local`` writes them, so both engines give the same file.

    Raises:
        ConfigurationError: for a model without a dynamic batch, columns that are not the
            manifest's input leaves, an unknown engine or a batch size below 1.
    """
    if engine not in ENGINES:
        raise ConfigurationError(f"--engine {engine!r}: one of {list(ENGINES)}.")
    if batch_size < 1 or actors < 1:
        raise ConfigurationError(f"--batch-size {batch_size}, --actors {actors}: give at least 1 of each.")
    if engine == "ray" and Path(input).is_dir():  # before the files are read
        raise ConfigurationError(f"--input {input}: --engine ray reads Parquet. HINT: use --engine local for .npz.")
    model = load(manifest, format=format, device=device)
    _check_batched(model.contract)
    target = Path(output) / OUTPUT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    rows, batches = read_rows(input, model.contract, batch_size)
    first = next(batches, None)
    if first is None:
        raise ConfigurationError(f"--input {input}: no rows.")
    # a Parquet column has one shape and type for every row: a mismatch is said here, before any work
    model.check_leaves([first[name] for name in model.input_names])
    batches = itertools.chain([first], batches)
    if engine == "ray":
        # absolute paths: the actors and read tasks run in other working directories, on other nodes
        batches = _on_ray(os.path.abspath(input), rows, model.contract, os.path.abspath(manifest), format, device,
                          batch_size, address, actors)  # fmt: skip
    else:
        batches = ((batch, model.run_leaves(batch)) for batch in batches)
    staged = target.with_name(f".{target.name}.writing")
    writer = None
    try:
        with _Progress(rows, progress) as advance:
            done = 0
            for batch, outputs in batches:
                count = len(next(iter(batch.values())))
                table = _table(model.contract, outputs, np.arange(done, done + count))
                writer = writer or _writer(staged, table.schema)
                writer.write_table(table)
                done += count
                advance(count)
        if done != rows or writer is None:  # never a file that lacks rows
            raise RuntimeError(f"predict wrote {done} rows of {rows}: the input changed, or rows were lost.")
        writer.close()
        staged.replace(target)  # a finished file only: a failed run leaves no half-written predictions
    finally:
        if writer is not None and staged.exists():
            writer.close()
            staged.unlink()
    return target


def read_rows(
    path: str | os.PathLike[str], contract: IOContract, batch_size: int
) -> tuple[int, Iterator[dict[str, np.ndarray]]]:
    """The number of rows and the batches of input leaves (by leaf name, as the exported dtypes) of ``path``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise ConfigurationError(f"--input {path}: a folder, but with no .npz or .npy file.")
        arrays = [_npz_leaves(file, contract) for file in files]
        rows = sum(len(next(iter(a.values()))) for a in arrays)
        return rows, _rebatched(arrays, batch_size)
    import pyarrow.parquet as pq

    # pre_buffer=False: pre-buffered reads kept every row group read so far (RSS grew with the file: 1.8x for 10x rows)
    file = pq.ParquetFile(path, pre_buffer=False)
    names = contract.inputs.names
    missing = [n for n in names if n not in file.schema_arrow.names]
    if missing:
        raise ConfigurationError(
            f"--input {path}: no column {missing}; the columns are {file.schema_arrow.names}."
            f" HINT: name one column per input leaf: {names}."
        )
    dtypes = {leaf.name: np.dtype(leaf.dtype) for leaf in contract.inputs.leaves}
    batches = ({n: _column(b.column(n)).astype(dtypes[n], copy=False) for n in names}
               for b in file.iter_batches(batch_size=batch_size, columns=names))  # fmt: skip
    return file.metadata.num_rows, batches


def _on_ray(
    path: str,
    rows: int,
    contract: IOContract,
    manifest: str | os.PathLike[str],
    fmt: str | None,
    device: str | None,
    batch_size: int,
    address: str | None,
    actors: int,
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """The batches run by Ray Data's actors, in the input's order: ``(inputs, outputs)`` by leaf name.

    Ray Data does not keep a Parquet file's order (seen with ray 2.60 and ``preserve_order``: a
    file of 50 row groups came back as rows 420,000-499,999 first), so every row carries its index
    (``ROW``), read task to actor to here, and the batches are put back in order as they arrive.
    """
    import pyarrow.parquet as pq
    import ray.data

    from lightning_deploy.serving.ray import connect

    connect(address)
    # blocks in order where Ray keeps it: what arrives out of order waits in memory
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    names = contract.inputs.names
    metadata = pq.ParquetFile(path).metadata
    counts = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    groups = [{"group": g, "start": int(s)} for g, s in enumerate(starts) if counts[g]]
    dtypes = {leaf.name: leaf.dtype for leaf in contract.inputs.leaves}
    gpus = 1 if device is not None and device.startswith("cuda") else 0
    # a read task per row group; blocks of whole batches, a few per actor
    per_block = batch_size * max(1, -(-rows // (batch_size * _BLOCKS_PER_ACTOR * actors)))
    dataset = ray.data.from_items(groups, override_num_blocks=len(groups)).map_batches(
        _read_groups, fn_args=(path, dtypes), batch_size=1, batch_format="numpy", num_cpus=0.5,
    ).repartition(target_num_rows_per_block=per_block).map_batches(
        _Predictor, fn_constructor_args=(str(manifest), fmt, device), batch_size=batch_size, batch_format="numpy",
        concurrency=actors, num_cpus=0.5, num_gpus=gpus,
    )  # fmt: skip
    arrived = dataset.iter_batches(batch_size=None, batch_format="numpy")
    for batch in in_row_order(arrived):
        yield {n: batch[n] for n in names}, {n: batch[n] for n in contract.outputs.names}


def in_row_order(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """``batches`` (each with a ``ROW`` column) as runs of consecutive rows from 0, each row once.

    A run that arrives early waits until the rows before it have come (memory: what arrived out
    of order); rows that arrive again (a task Ray ran twice, blocks cut differently) are dropped.
    """
    pending: dict[int, dict[str, np.ndarray]] = {}  # runs of consecutive rows, by their first row
    following = 0
    for batch in batches:
        index = batch[ROW]
        for piece in np.split(np.arange(len(index)), np.flatnonzero(np.diff(index) != 1) + 1):
            first, last = int(index[piece[0]]), int(index[piece[-1]])
            if last >= following and len(piece) > len(pending.get(first, {ROW: ()})[ROW]):
                pending[first] = {name: values[piece] for name, values in batch.items()}
        while ready := sorted(first for first in pending if first <= following):
            for first in ready:  # each starts at or before the next row: what is left of it follows on
                run = pending.pop(first)
                fresh = run[ROW] >= following
                if fresh.any():
                    yield {name: values[fresh] for name, values in run.items()}
                    following = int(run[ROW][-1]) + 1


def _read_groups(item: dict[str, np.ndarray], path: str, dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """A Ray Data read task: one row group of ``path``, its input leaves and each row's index."""
    import pyarrow.parquet as pq

    group, start = int(item["group"][0]), int(item["start"][0])
    table = pq.ParquetFile(path).read_row_group(group, columns=list(dtypes))
    leaves = {n: _column(table.column(n).combine_chunks()).astype(d, copy=False) for n, d in dtypes.items()}
    return {ROW: np.arange(start, start + table.num_rows), **leaves}


class _Predictor:
    """A Ray Data actor: the artifact opened once by ``load()``, each batch's outputs added to it by leaf name."""

    def __init__(self, manifest: str, fmt: str | None, device: str | None) -> None:
        self.model = load(manifest, format=fmt, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {name: batch[name] for name in self.model.input_names}
        return {ROW: batch[ROW], **inputs, **self.model.run_leaves(inputs)}


def _check_batched(contract: IOContract) -> None:
    axis, reason = batch_axis(contract)
    if axis is None:
        raise ConfigurationError(
            f"predict runs rows in batches along dim 0, but {reason}. HINT: export with dynamic_batch=True."
        )


def _npz_leaves(file: Path, contract: IOContract) -> dict[str, np.ndarray]:
    names = contract.inputs.names
    if file.suffix == ".npy":
        if len(names) != 1:
            raise ConfigurationError(f"{file}: a .npy holds one array; the model takes {names}. HINT: use .npz.")
        return {names[0]: np.load(file, allow_pickle=False)}
    with np.load(file, allow_pickle=False) as archive:
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise ConfigurationError(f"{file}: no array {missing}; it holds {archive.files}.")
        return {n: archive[n] for n in names}


def _rebatched(arrays: Sequence[dict[str, np.ndarray]], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The files' rows in batches of ``batch_size`` (a batch may span files)."""
    pending: list[dict[str, np.ndarray]] = []
    size = 0
    for part in arrays:
        start, count = 0, len(next(iter(part.values())))
        while start < count:
            take = min(batch_size - size, count - start)
            pending.append({k: v[start : start + take] for k, v in part.items()})
            size, start = size + take, start + take
            if size == batch_size:
                yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
                pending, size = [], 0
    if pending:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


def _column(column: Any) -> np.ndarray:
    """A Parquet column as an array of rows: numbers, fixed-shape tensors, or (nested) fixed-size lists."""
    import pyarrow as pa

    if isinstance(column.type, pa.FixedShapeTensorType):
        return column.to_numpy_ndarray()
    if pa.types.is_fixed_size_list(column.type):
        shape, values = [], column
        while pa.types.is_fixed_size_list(values.type):
            shape.append(values.type.list_size)
            values = values.flatten()
        return values.to_numpy(zero_copy_only=False).reshape(len(column), *shape)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return np.asarray(column.to_pylist())
    return column.to_numpy(zero_copy_only=False)


def _table(contract: IOContract, outputs: dict[str, Any], rows: np.ndarray) -> Any:
    """The output leaves as a table: ``row``, then a number or a fixed-shape tensor column per leaf."""
    import pyarrow as pa

    columns = {ROW: pa.array(rows, pa.int64())}
    for name in contract.outputs.names:
        array = np.ascontiguousarray(np.asarray(outputs[name]))
        columns[name] = pa.array(array) if array.ndim == 1 else pa.FixedShapeTensorArray.from_numpy_ndarray(array)
    return pa.table(columns)


def _writer(path: Path, schema: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema)


class _Progress:
    """A rich progress bar over ``total`` rows (nothing where ``show`` is False); yields the advance call."""

    def __init__(self, total: int, show: bool) -> None:
        self.total, self.show = total, show

    def __enter__(self) -> Any:
        if not self.show:
            return lambda count: None
        from rich.progress import Progress

        self.bar = Progress(transient=False)
        self.bar.start()
        task = self.bar.add_task("predict", total=self.total)
        return lambda count: self.bar.advance(task, count)

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self.bar.stop()
