"""AMG on 3D elasticity: smoothed aggregation needs the rigid-body modes as its near-null space.

A matrix assembled by ``sla.assembly`` records its dof coordinates, and AMG takes the six
rigid-body modes (three translations, three rotations) by itself.  A matrix from elsewhere (SciPy,
another FEM code) hands them over with ``sla.precond.rigid_body_modes(points)``.  With the
constant vector alone, the usual choice for scalar problems, CG needs many times the iterations.

Run: ``python examples/elasticity_amg.py [cells across, default 6]``
"""

import sys

import sla
from sla.assembly.cantilever import cantilever_system_3d


def solve(K, f, **amg):
    x, info = sla.solve(
        K, f, backend="pytorch", method="cg", preconditioner=sla.precond.AMG(**amg), rtol=1e-8, return_info=True
    )
    return x, info.iterations


def main(m: int = 6) -> dict:
    K, f, basis = cantilever_system_3d(nx=8 * m, ny=m, nz=m)  # a clamped beam of P1 tetrahedra
    print(f"3D cantilever: {K.shape[0]:,} unknowns, {K.nnz:,} entries")
    x, its = solve(K, f)  # the dof points recorded by the assembly: the rigid-body modes
    print(f"AMG, rigid-body modes (recorded by the assembly): {its} CG iterations")
    _, its_const = solve(K, f, near_nullspace="constant")
    print(f"AMG, the constant only:                          {its_const} CG iterations")
    # the same matrix as if it came from elsewhere: no recorded points, the modes passed explicitly
    external = sla.SparseTensor.from_scipy(K.to_scipy())
    B = sla.precond.rigid_body_modes(basis.mesh.points)  # [dofs, 6], dofs interleaved by node
    x_ext, its_ext = solve(external, f, near_nullspace=B)
    print(f"AMG, modes passed explicitly (a SciPy matrix):   {its_ext} CG iterations")
    tip = basis.mesh.points[:, 0] == basis.mesh.points[:, 0].max()
    print(f"tip deflection {-float(x.reshape(-1, 3)[tip, 2].mean()):.4f}")
    return {"modes": its, "constant": its_const, "explicit": its_ext, "x": x, "x_explicit": x_ext}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
