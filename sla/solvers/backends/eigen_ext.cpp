// Eigen sparse solvers for sla's "eigen" backend (compiled on first use by eigen.py).
//
// One state object per (matrix, method): it copies the CSR matrix into Eigen,
// factorises (ldlt, lu) or sets up the diagonal preconditioner (cg, bicgstab),
// and solves for column-major right-hand sides, forward or transposed.
//
// The Python side (eigen.py) validates dtypes, shapes and contiguity and passes
// raw data pointers; including only pybind11 (not torch/extension.h) keeps the
// first compile short.  The GIL is released while Eigen works.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <Eigen/IterativeLinearSolvers>
#include <Eigen/OrderingMethods>
#include <Eigen/SparseCholesky>
#include <Eigen/SparseCore>
#include <Eigen/SparseLU>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>

namespace py = pybind11;

namespace {

template <typename T>
T* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

template <typename Scalar>
class State {
 public:
  using Row = Eigen::SparseMatrix<Scalar, Eigen::RowMajor, int>;
  using Col = Eigen::SparseMatrix<Scalar, Eigen::ColMajor, int>;
  using Vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using CG = Eigen::ConjugateGradient<Row, Eigen::Lower | Eigen::Upper, Eigen::DiagonalPreconditioner<Scalar>>;
  using BiCG = Eigen::BiCGSTAB<Row, Eigen::DiagonalPreconditioner<Scalar>>;
  using LDLT = Eigen::SimplicialLDLT<Col, Eigen::Lower, Eigen::AMDOrdering<int>>;
  using LU = Eigen::SparseLU<Col, Eigen::COLAMDOrdering<int>>;

  // crow [n+1], col [nnz] int32; values [nnz] Scalar: the CSR arrays of A.
  State(const std::string& method, std::int64_t n, std::int64_t nnz, std::uintptr_t crow, std::uintptr_t col,
        std::uintptr_t values, double rtol, double atol, std::int64_t maxiter)
      : method_(method), n_(n), rtol_(rtol), atol_(atol), maxiter_(maxiter) {
    Eigen::Map<const Row> A(n, n, nnz, as_ptr<const int>(crow), as_ptr<const int>(col),
                            as_ptr<const Scalar>(values));
    py::gil_scoped_release release;
    if (method == "cg") {
      A_ = A;
      cg_ = std::make_unique<CG>();
      configure(*cg_);
      cg_->compute(A_);
      check(cg_->info(), "the diagonal preconditioner could not be built");
    } else if (method == "bicgstab") {
      A_ = A;
      bicg_ = std::make_unique<BiCG>();
      configure(*bicg_);
      bicg_->compute(A_);
      check(bicg_->info(), "the diagonal preconditioner could not be built");
    } else if (method == "ldlt") {
      Col C = A;
      ldlt_ = std::make_unique<LDLT>();
      ldlt_->compute(C);
      check(ldlt_->info(), "SimplicialLDLT: zero pivot (the matrix is singular or needs pivoting)");
      const auto d = ldlt_->vectorD();
      if ((d.array() == Scalar(0)).any() || !d.allFinite())
        throw std::domain_error("singular: SimplicialLDLT produced a zero or non-finite pivot");
    } else if (method == "lu") {
      Col C = A;
      lu_ = std::make_unique<LU>();
      lu_->analyzePattern(C);
      lu_->factorize(C);
      if (lu_->info() != Eigen::Success) throw std::domain_error("singular: SparseLU: " + lu_->lastErrorMessage());
    } else {
      throw std::invalid_argument("unknown Eigen method '" + method + "'");
    }
  }

  // b, x: [k, n] row-major buffers (= [n, k] column-major).  Returns (max iterations, converged, max error).
  std::tuple<std::int64_t, bool, double> solve(std::uintptr_t b, std::uintptr_t x, std::int64_t k, bool transpose) {
    Eigen::Map<const Mat> B(as_ptr<const Scalar>(b), n_, k);
    Eigen::Map<Mat> X(as_ptr<Scalar>(x), n_, k);
    py::gil_scoped_release release;
    if (ldlt_) {  // symmetric: A^T = A
      X = ldlt_->solve(B);
      return {0, true, 0.0};
    }
    if (lu_) {
      if (transpose) {
        X = lu_->transpose().solve(B);
      } else {
        X = lu_->solve(B);
      }
      return {0, true, 0.0};
    }
    if (cg_) return krylov(*cg_, B, X);  // CG needs a symmetric matrix: A^T = A
    if (!transpose) return krylov(*bicg_, B, X);
    if (!bicgT_) {  // the adjoint pass solves with A^T: set it up once, on first use
      At_ = A_.transpose();
      bicgT_ = std::make_unique<BiCG>();
      configure(*bicgT_);
      bicgT_->compute(At_);
    }
    return krylov(*bicgT_, B, X);
  }

  std::int64_t rows() const { return n_; }

 private:
  template <typename S>
  void configure(S& s) const {
    s.setMaxIterations(static_cast<Eigen::Index>(maxiter_));
    s.setTolerance(static_cast<typename Eigen::NumTraits<Scalar>::Real>(rtol_));
  }

  static void check(Eigen::ComputationInfo info, const char* what) {
    if (info != Eigen::Success) throw std::domain_error(std::string("singular: ") + what);
  }

  // Column by column so that every column meets max(rtol, atol / |b|) and reports its own count.
  template <typename S>
  std::tuple<std::int64_t, bool, double> krylov(S& s, const Eigen::Map<const Mat>& B, Eigen::Map<Mat>& X) {
    std::int64_t iters = 0;
    bool ok = true;
    double worst = 0.0;
    for (Eigen::Index j = 0; j < B.cols(); ++j) {
      const double bn = static_cast<double>(B.col(j).norm());
      if (bn == 0.0) {
        X.col(j).setZero();
        continue;
      }
      s.setTolerance(static_cast<typename Eigen::NumTraits<Scalar>::Real>(std::max(rtol_, atol_ / bn)));
      Vec xj = s.solve(B.col(j));
      X.col(j) = xj;
      iters = std::max<std::int64_t>(iters, s.iterations());
      worst = std::max(worst, static_cast<double>(s.error()));
      ok = ok && s.info() == Eigen::Success;
    }
    return {iters, ok, worst};
  }

  std::string method_;
  std::int64_t n_;
  double rtol_, atol_;
  std::int64_t maxiter_;
  Row A_, At_;
  std::unique_ptr<CG> cg_;
  std::unique_ptr<BiCG> bicg_, bicgT_;
  std::unique_ptr<LDLT> ldlt_;
  std::unique_ptr<LU> lu_;
};

template <typename Scalar>
void bind(py::module_& m, const char* name) {
  py::class_<State<Scalar>>(m, name)
      .def(py::init<const std::string&, std::int64_t, std::int64_t, std::uintptr_t, std::uintptr_t, std::uintptr_t,
                    double, double, std::int64_t>())
      .def("solve", &State<Scalar>::solve)
      .def_property_readonly("rows", &State<Scalar>::rows);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Eigen sparse solvers (ConjugateGradient, BiCGSTAB, SimplicialLDLT, SparseLU) for sla";
  bind<float>(m, "StateFloat");
  bind<double>(m, "StateDouble");
  m.attr("eigen_version") = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                            std::to_string(EIGEN_MINOR_VERSION);
}
