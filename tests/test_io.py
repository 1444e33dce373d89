"""sla.io: safetensors persistence and Matrix Market files, checked against scipy.io."""

import gzip
import json
import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch
from devices import DEVICES

import sla
from sla import gallery
from sla.io import FORMAT_VERSION, load_sparse, save_sparse
from sla.mtx import load_mtx, save_mtx


def _random(n=7, m=None, dtype=torch.float64, density=0.4, seed=0, batch=()):
    rng = np.random.default_rng(seed)
    m = n if m is None else m
    S = sp.random(n, m, density=density, random_state=rng, format="coo")
    vals = torch.randn(*batch, S.nnz, dtype=dtype)
    return sla.SparseTensor(
        vals, torch.from_numpy(S.row.astype(np.int64)), torch.from_numpy(S.col.astype(np.int64)), (*batch, n, m)
    )


def assert_same(A, B):
    assert B.shape == A.shape and B.dtype == A.dtype
    assert torch.equal(B.row.cpu(), A.row.cpu()) and torch.equal(B.col.cpu(), A.col.cpu())
    assert torch.equal(B.values.cpu(), A.values.cpu())


def _files(folder):
    return sorted(os.listdir(folder))


# ------------------------------------------------------------ safetensors
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_safetensors_round_trip_exact(tmp_path, dtype, batch):
    A = _random(9, 6, dtype=dtype, batch=batch)
    f = tmp_path / "A.safetensors"
    A.save(f)
    B = sla.SparseTensor.load(f)
    assert_same(A, B)
    assert B.batch_shape == tuple(batch)
    assert _files(tmp_path) == ["A.safetensors"]  # no temporary left behind


@pytest.mark.parametrize("device", DEVICES)
def test_safetensors_loads_on_requested_device(tmp_path, device):
    A = gallery.poisson2d(4, dtype=torch.float64).requires_grad_()
    save_sparse(A, tmp_path / "p.safetensors")
    B = load_sparse(tmp_path / "p.safetensors", device=device)
    assert B.device.type == device and B.pattern.device.type == device
    assert not B.requires_grad
    assert B.pattern.cache.get("grid") == (4, 4)  # multigrid's structured-grid hint survives
    assert_same(A.detach(), B)
    x = torch.ones(16, dtype=torch.float64, device=device)
    torch.testing.assert_close((B @ x).cpu(), A.detach() @ x.cpu())


def test_safetensors_rejects_foreign_and_newer_files(tmp_path):
    import safetensors.torch as st

    foreign = tmp_path / "foreign.safetensors"
    st.save_file({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.safetensors.*not a sla SparseTensor file"):
        load_sparse(foreign)

    A = _random(5)
    good = tmp_path / "good.safetensors"
    save_sparse(A, good)
    tensors = st.load_file(good)
    from safetensors import safe_open

    with safe_open(good, framework="pt") as f:
        meta = dict(f.metadata())
    newer = tmp_path / "newer.safetensors"
    st.save_file(tensors, newer, metadata={**meta, "format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(ValueError, match=r"newer\.safetensors.*newer sla"):
        load_sparse(newer)

    bad_shape = tmp_path / "shape.safetensors"
    st.save_file(tensors, bad_shape, metadata={**meta, "shape": json.dumps([5, 4])})
    with pytest.raises(ValueError, match=r"shape\.safetensors.*col index .* out of range"):
        load_sparse(bad_shape)

    unsorted = tmp_path / "unsorted.safetensors"
    unsummed = {k: v for k, v in meta.items() if k != "sha256"}  # a file without a checksum (older sla)
    st.save_file({**tensors, "row": tensors["row"].flip(0).contiguous()}, unsorted, metadata=unsummed)
    with pytest.raises(ValueError, match=r"unsorted\.safetensors.*not sorted"):
        load_sparse(unsorted)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match=r"garbage\.safetensors.*not a readable safetensors file"):
        load_sparse(garbage)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch as st

    A = _random(6)
    target = tmp_path / "A.safetensors"

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_sparse(A, target)
    assert _files(tmp_path) == []

    # an existing file is kept intact when overwriting it fails
    monkeypatch.undo()
    save_sparse(A, target)
    before = target.read_bytes()
    monkeypatch.setattr(st, "save_file", broken)
    with pytest.raises(OSError):
        save_sparse(_random(6, seed=1), target)
    assert target.read_bytes() == before and _files(tmp_path) == ["A.safetensors"]


# ---------------------------------------------------------- Matrix Market
def _scipy_zoo():
    rng = np.random.default_rng(3)
    n = 12
    R = sp.random(n, n, density=0.3, random_state=rng, format="csr")
    R = R + sp.eye(n)
    Z = R + 1j * sp.random(n, n, density=0.3, random_state=rng, format="csr")
    S = R + R.T
    K = (R - R.T).tocsr()
    K.eliminate_zeros()
    H = Z + Z.conj().T
    I = sp.csr_matrix(np.round(4 * R.toarray()))
    return {
        "real-general": (R, {}),
        "rect": (sp.random(5, 9, density=0.4, random_state=rng, format="csr"), {}),
        "real-symmetric": (S, {"symmetry": "symmetric"}),
        "real-skew": (K, {"symmetry": "skew-symmetric"}),
        "complex-general": (Z, {}),
        "complex-symmetric": (Z + Z.T, {"symmetry": "symmetric"}),
        "complex-hermitian": (H, {"symmetry": "hermitian"}),
        "integer-general": (I.astype(np.int64), {"field": "integer"}),
        "integer-symmetric": ((I + I.T).astype(np.int64), {"field": "integer", "symmetry": "symmetric"}),
        "pattern-general": (R, {"field": "pattern"}),
        "pattern-symmetric": (S, {"field": "pattern", "symmetry": "symmetric"}),
    }


@pytest.mark.parametrize("name", list(_scipy_zoo()))
@pytest.mark.parametrize("gz", [False, True])
def test_load_mtx_matches_scipy(tmp_path, name, gz):
    M, kw = _scipy_zoo()[name]
    f = tmp_path / "m.mtx"
    scipy.io.mmwrite(f, M, **kw)
    if gz:
        gzf = tmp_path / "m.mtx.gz"
        gzf.write_bytes(gzip.compress(f.read_bytes()))
        f = gzf
    ref = sp.csr_array(scipy.io.mmread(f))
    A = load_mtx(f)
    assert A.dtype == (torch.complex128 if np.iscomplexobj(ref.data) else torch.float64)
    np.testing.assert_array_equal(A.to_dense().numpy(), ref.toarray())


@pytest.mark.parametrize("name", [k for k in _scipy_zoo() if not k.startswith(("pattern", "integer"))])
@pytest.mark.parametrize("suffix", [".mtx", ".mtx.gz"])
def test_save_mtx_compresses_symmetry_and_scipy_reads_it(tmp_path, name, suffix):
    M, kw = _scipy_zoo()[name]
    A = sla.SparseTensor.from_scipy(M)
    f = tmp_path / ("A" + suffix)
    save_mtx(A, f)
    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(f, "rt") as fh:
        banner = fh.readline().split()
        M_, N_, nnz = map(int, fh.readline().split())
    want = kw.get("symmetry", "general")
    assert banner[3:] == ["complex" if A.is_complex else "real", want]
    if want != "general":
        assert nnz < A.nnz  # only one triangle stored
    ref = scipy.io.mmread(f)
    np.testing.assert_array_equal(sp.csr_array(ref).toarray(), A.to_dense().numpy())
    assert_same(A, load_mtx(f))  # exact round trip, same pattern
    assert _files(tmp_path) == ["A" + suffix]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
def test_mtx_round_trip_is_exact(tmp_path, dtype):
    A = _random(30, 20, dtype=dtype, density=0.2, seed=5)
    A = A * torch.tensor(1e-7, dtype=dtype) if not dtype.is_complex else A
    save_mtx(A, tmp_path / "A.mtx")
    assert_same(A, load_mtx(tmp_path / "A.mtx", dtype=dtype))


def test_save_mtx_fields_and_explicit_symmetry(tmp_path):
    A = sla.SparseTensor.from_dense(torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64))
    save_mtx(A, tmp_path / "i.mtx", field="integer", comment="made by sla\nsecond line")
    text = (tmp_path / "i.mtx").read_text()
    assert text.startswith("%%MatrixMarket matrix coordinate integer symmetric\n% made by sla\n% second line\n2 2 3\n")
    np.testing.assert_array_equal(scipy.io.mmread(tmp_path / "i.mtx").toarray(), A.to_dense().numpy())
    save_mtx(A, tmp_path / "p.mtx", field="pattern", symmetry="general")
    assert torch.equal(load_mtx(tmp_path / "p.mtx").to_dense(), (A.to_dense() != 0).double())
    with pytest.raises(ValueError, match="integral values"):
        save_mtx(A * 0.5, tmp_path / "x.mtx", field="integer")
    with pytest.raises(ValueError, match="not exactly skew-symmetric"):
        save_mtx(A, tmp_path / "x.mtx", symmetry="skew-symmetric")
    with pytest.raises(ValueError, match="unbatched"):
        save_mtx(_random(3, batch=(2,)), tmp_path / "x.mtx")
    assert not (tmp_path / "x.mtx").exists()


def test_failed_mtx_save_leaves_nothing(tmp_path, monkeypatch):
    import sla.mtx as sio

    def broken(fh, *args, **kwargs):
        fh.write(b"1 1 ")
        raise KeyboardInterrupt

    monkeypatch.setattr(sio, "_write_entries", broken)
    with pytest.raises(KeyboardInterrupt):
        save_mtx(_random(4), tmp_path / "A.mtx")
    assert _files(tmp_path) == []


BAD = {
    "banner": ("%%MatrixMarkett matrix coordinate real general\n2 2 1\n1 1 1\n", r"line 1: not a Matrix Market file"),
    "no-banner": ("2 2 1\n1 1 1.0\n", r"line 1: not a Matrix Market file"),
    "field": (
        "%%MatrixMarket matrix coordinate quaternion general\n2 2 1\n1 1 1\n",
        r"line 1: unknown field 'quaternion'",
    ),
    "symmetry": ("%%MatrixMarket matrix coordinate real lopsided\n2 2 1\n1 1 1\n", r"line 1: unknown symmetry"),
    "array": (
        "%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n",
        r"line 1: format 'array' is not supported",
    ),
    "size": ("%%MatrixMarket matrix coordinate real general\n%c\n2 x 1\n1 1 1\n", r"line 3: size line"),
    "no-size": (
        "%%MatrixMarket matrix coordinate real general\n% only comments\n",
        r"line 2: file ends before the size line",
    ),
    "truncated": (
        "%%MatrixMarket matrix coordinate real general\n3 3 3\n1 1 1.0\n2 2 2.0\n",
        r"line 4: truncated data.*announces 3 entries, the file holds 2",
    ),
    "truncated-line": (
        "%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1.0\n2 2\n",
        r"line 4: expected 3 numbers",
    ),
    "too-many": (
        "%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 1.0\n\n2 2 2.0\n",
        r"line 5: more entries than the 1",
    ),
    "range": (
        "%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1.0\n% note\n4 2 2.0\n",
        r"line 5: index \(4, 2\) out of range for a 3 x 3",
    ),
    "zero-index": (
        "%%MatrixMarket matrix coordinate real general\n3 3 1\n0 1 1.0\n",
        r"line 3: index \(0, 1\) out of range",
    ),
    "not-a-number": (
        "%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 abc\n",
        r"line 3: 'abc' is not a number",
    ),
    "float-index": (
        "%%MatrixMarket matrix coordinate real general\n3 3 1\n1.5 1 2\n",
        r"line 3: '1.5' is not an integer index",
    ),
    "symmetric-rect": (
        "%%MatrixMarket matrix coordinate real symmetric\n3 2 1\n1 1 2\n",
        r"line 2: a symmetric matrix must be square",
    ),
    "skew-diag": (
        "%%MatrixMarket matrix coordinate real skew-symmetric\n2 2 1\n1 1 2\n",
        r"line 3: a skew-symmetric matrix has a non-zero diagonal",
    ),
    "hermitian-real": (
        "%%MatrixMarket matrix coordinate real hermitian\n2 2 1\n1 1 2\n",
        r"line 1: symmetry 'hermitian' needs field 'complex'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_mtx_files_name_file_and_line(tmp_path, case):
    text, pattern = BAD[case]
    f = tmp_path / f"bad_{case}.mtx"
    f.write_text(text)
    with pytest.raises(ValueError, match=rf"bad_{case}\.mtx, {pattern}"):
        load_mtx(f)


def test_mtx_comments_blank_lines_and_duplicates(tmp_path):
    f = tmp_path / "c.mtx"
    f.write_text(
        "%%MatrixMarket matrix coordinate real general\n% a comment\n\n3 3 4\n1 1 1.5\n\n% mid comment\n"
        "3 2 -2e-3\n1 1 0.5\n2 3 7\n"
    )
    A = load_mtx(f)
    g = tmp_path / "plain.mtx"  # scipy's reader accepts comments only in the header
    g.write_text(f.read_text().replace("% mid comment\n", ""))
    np.testing.assert_array_equal(A.to_dense().numpy(), scipy.io.mmread(g).toarray())
    assert A.to_dense()[0, 0] == 2.0
    assert A.nnz == 3  # duplicates summed, as scipy does


def test_load_mtx_large_file_quickly(tmp_path):
    A = gallery.poisson2d(200, dtype=torch.float64)  # 40K rows, ~200K entries
    f = tmp_path / "p.mtx"
    scipy.io.mmwrite(f, A.to_scipy(), symmetry="symmetric")
    B = load_mtx(f, device="cpu")
    assert_same(A, B)
