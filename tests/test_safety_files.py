"""Files and shapes: durable atomic saves (temp files cleaned after a killed writer, permissions
kept, checksum verified at load); shapes that overflow, are not integers, or would allocate
terabytes give clear errors; integer scipy matrices are not rounded."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import sla
from sla.io import load_sparse, save_sparse


def _A(n=50):
    g = torch.Generator().manual_seed(0)
    return sla.SparseTensor.from_dense(torch.rand(n, n, generator=g, dtype=torch.float64))


def _temps(folder, name):
    return [f for f in os.listdir(folder) if f.startswith("." + name + ".") and f.endswith(".tmp")]


def test_permissions_of_an_existing_file_are_kept(tmp_path):
    f = tmp_path / "A.safetensors"
    f.write_bytes(b"old")
    os.chmod(f, 0o644)
    save_sparse(_A(), f)
    assert (os.stat(f).st_mode & 0o777) == 0o644
    new = tmp_path / "C.safetensors"
    save_sparse(_A(5), new)
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(new).st_mode & 0o777) == (0o666 & ~umask)  # like open(), not mkstemp's 0600


def test_flipped_bit_is_detected_at_load(tmp_path):
    f = tmp_path / "A.safetensors"
    A = _A()
    save_sparse(A, f)
    data = bytearray(f.read_bytes())
    data[-20] ^= 0x01  # inside the tensor data (the header comes first)
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_sparse(f)


def test_interrupted_save_leaves_no_temp_files(tmp_path):
    f = tmp_path / "A.safetensors"
    A = _A()

    class Boom(KeyboardInterrupt):
        pass

    import safetensors.torch as st

    orig = st.save_file

    def interrupted(tensors, path, metadata=None):
        orig(tensors, path, metadata=metadata)
        raise Boom

    st.save_file = interrupted
    try:
        with pytest.raises(Boom):
            save_sparse(A, f)
    finally:
        st.save_file = orig
    assert not f.exists() and _temps(tmp_path, "A.safetensors") == []


def test_killed_writer_temp_is_removed_by_the_next_save(tmp_path):
    f = tmp_path / "A.safetensors"
    # a writer that dies mid-save, named as atomic_path names its temporary file (pid inside);
    # plain Python so the test does not pay for importing torch in the child
    script = textwrap.dedent(
        f"""
        import os, tempfile, time
        fd, tmp = tempfile.mkstemp(dir={str(tmp_path)!r}, prefix=".A.safetensors." + str(os.getpid()) + ".",
                                   suffix=".tmp")
        os.write(fd, b"x" * 1000)
        print("writing", flush=True)
        time.sleep(60)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        assert len(_temps(tmp_path, "A.safetensors")) == 1
        # a live writer's temp file is not touched by a concurrent save
        save_sparse(_A(5), f)
        assert len(_temps(tmp_path, "A.safetensors")) == 1
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    save_sparse(_A(5), f)
    assert _temps(tmp_path, "A.safetensors") == []
    assert load_sparse(f).shape == (5, 5)


def test_wide_shapes_do_not_move_entries():
    v = torch.tensor([1.0, 2.0, 3.0])
    A = sla.SparseTensor(v, [3, 0, 1], [1, 7, 2**61], (4, 2**62))
    got = sorted(zip(A.row.tolist(), A.col.tolist(), A.values.tolist()))
    assert got == [(0, 7, 2.0), (1, 2**61, 3.0), (3, 1, 1.0)]
    # duplicates are summed, also in wide shapes
    B = sla.SparseTensor(torch.tensor([1.0, 2.0, 4.0]), [3, 3, 0], [2**61, 2**61, 5], (4, 2**62))
    assert sorted(zip(B.row.tolist(), B.col.tolist(), B.values.tolist())) == [(0, 5, 4.0), (3, 2**61, 3.0)]


@pytest.mark.parametrize("shape", [(2.5, 2.9), (2.0, 2), (True, 2)])
def test_non_integer_shapes_are_rejected(shape):
    with pytest.raises(TypeError, match="shape must hold integers"):
        sla.SparseTensor(torch.tensor([1.0]), [0], [0], shape)


def test_from_scipy_keeps_integers_exact():
    A = sla.SparseTensor.from_scipy(sp.csr_matrix(np.array([[16777217, 0], [0, 3]], dtype=np.int64)))
    assert A.dtype == torch.float64 and int(A.values[0]) == 16777217
    with pytest.raises(ValueError, match="not exactly representable"):
        sla.SparseTensor.from_scipy(sp.csr_matrix(np.array([[2**62 + 1]], dtype=np.int64)))


def test_terabyte_shapes_are_refused_before_allocating(tmp_path):
    mtx = tmp_path / "big.mtx"
    mtx.write_text("%%MatrixMarket matrix coordinate real general\n1000000000000 1000000000000 1\n1 1 1.0\n")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"big\.mtx, line 2: .*row pointer"):
        sla.load_mtx(mtx)
    import safetensors.torch as st

    f = tmp_path / "big.safetensors"
    meta = {
        "format": "sla.SparseTensor",
        "format_version": "1",
        "shape": "[1000000000000, 1000000000000]",
        "batch_shape": "[]",
        "dtype": "float64",
        "nnz": "0",
    }
    empty = torch.zeros(0, dtype=torch.int64)
    st.save_file({"values": torch.zeros(0, dtype=torch.float64), "row": empty, "col": empty}, f, metadata=meta)
    with pytest.raises(ValueError, match=r"big\.safetensors.*row pointer"):
        load_sparse(f)
    with pytest.raises(ValueError, match="row pointer"):
        sla.SparseTensor(torch.zeros(0), empty, empty, (10**12, 3))
    assert time.perf_counter() - t0 < 5
