"""Quick start: build a 2D Poisson matrix, solve it, differentiate through the solve."""

import torch

import sla

n = 64  # grid points per side -> n*n unknowns
idx = torch.arange(n * n).reshape(n, n)
rows, cols, vals = [idx.flatten()], [idx.flatten()], [torch.full((n * n,), 4.0)]
for a, b in ((idx[1:, :], idx[:-1, :]), (idx[:, 1:], idx[:, :-1])):
    for r, c in ((a, b), (b, a)):
        rows.append(r.flatten()), cols.append(c.flatten()), vals.append(torch.full((r.numel(),), -1.0))
values = torch.cat(vals).double().requires_grad_()
A = sla.SparseTensor(values, torch.cat(rows), torch.cat(cols), (n * n, n * n))
b = torch.ones(n * n, dtype=torch.float64)

x, info = A.solve(b, return_info=True)
x.sum().backward()  # adjoint solve, reusing the factorisation
print(f"{A}\nmatrix type: {A.detect_matrix_type()}")
print(f"solved with {info.backend}/{info.method}: residual {info.residual:.2e}, max x {x.max():.4f}")
print(f"|d sum(x) / d values| = {values.grad.norm():.4f}")
sla.show_backends()
