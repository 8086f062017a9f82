import COpenBLAS

/// Single-precision matrix multiply on row-major matrices:
/// `C = alpha * op(A) * op(B) + beta * C`, with `op(A)` of shape (m, k) and `op(B)` of shape (k, n).
///
/// `GEMM.sgemm` calls OpenBLAS; `GEMM.naive` is the reference kernel the tests hold it to.
public enum GEMM {
    /// OpenBLAS `cblas_sgemm`, row-major.
    ///
    /// With OpenBLAS's AVX-512 kernels, a product with one row or one column (the output layer's
    /// m x 1 forward pass) goes to `cblas_sgemv` instead: their small-matrix sgemm kernel mallocs a
    /// buffer on every such call (0.3.21). Other kernels keep sgemm, whose rounding the N-rank
    /// equivalence tests were written against.
    @inline(__always)
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                             alpha: Float, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {   // an empty product: C = beta * C (BLAS argument checks want k >= 1 here)
            for i in 0..<m {
                let row = c + i * ldc
                if beta == 0 { row.update(repeating: 0, count: n) } else if beta != 1 { for j in 0..<n { row[j] *= beta } }
            }
            return
        }
        if n == 1 && vectorProductsUseGemv {
            // C[:, 0] = alpha op(A) b + beta C[:, 0], b = op(B)'s one column.
            cblas_sgemv(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                        blasint(transA ? k : m), blasint(transA ? m : k), alpha, a, blasint(lda),
                        b, blasint(transB ? 1 : ldb), beta, c, blasint(ldc))
            return
        }
        if m == 1 && vectorProductsUseGemv {
            // C[0, :] = alpha a op(B) + beta C[0, :], a = op(A)'s one row.
            cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans,
                        blasint(transB ? n : k), blasint(transB ? k : n), alpha, b, blasint(ldb),
                        a, blasint(transA ? lda : 1), beta, c, 1)
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k),
                    alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }

    /// Whether one-row and one-column products go to sgemv (see `sgemm`): decided once, from the
    /// kernels OpenBLAS picked when it loaded.
    public static let vectorProductsUseGemv: Bool = {
        let core = coreName.lowercased()
        return ["skylakex", "cooperlake", "sapphirerapids"].contains(core)
    }()

    /// The reference: three loops, accumulating in Double.
    public static func naive(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                             alpha: Float, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    let aip = transA ? a[p * lda + i] : a[i * lda + p]
                    let bpj = transB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Double(aip) * Double(bpj)
                }
                let prior: Float = beta == 0 ? 0 : beta * c[i * ldc + j]
                c[i * ldc + j] = Float(Double(alpha) * sum) + prior
            }
        }
    }

    /// Restricts OpenBLAS to `count` threads (rec-dist runs one BLAS thread per MPI rank).
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(count))
    }

    /// The number of threads OpenBLAS will use.
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// The CPU kernel family OpenBLAS selected, e.g. "Cooperlake".
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}
