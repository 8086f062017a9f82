#if canImport(Glibc)
import Glibc
#endif
import RecCore

/// OpenBLAS picks its kernels once, when the library loads, from the CPU model. Builds that do not
/// know a newer CPU fall back to their generic "Prescott" (SSE3) kernels: Debian's OpenBLAS
/// 0.3.21 on this machine's Xeon (family 6, model 207) runs sgemm 4-5x slower that way than with
/// its AVX-512 kernels. The kernels can only be chosen before the library loads, through
/// OPENBLAS_CORETYPE, so when OpenBLAS fell back on a CPU with AVX-512 (or AVX2), this process
/// re-executes itself with OPENBLAS_CORETYPE set for its own CPU (each MPI rank decides for the
/// host it runs on). Setting OPENBLAS_CORETYPE yourself, or REC_DIST_KEEP_BLAS_KERNELS=1, keeps
/// OpenBLAS's choice.
///
/// Every subcommand that computes with OpenBLAS (`train`, `predict`, `bench`) calls
/// `reexecWithNativeKernelsIfNeeded()` first thing in `run()`; the others (`synth`, `prepare`,
/// `report`) make no sgemm call and skip the exec.
enum BLASKernels {
    /// The OPENBLAS_CORETYPE to ask for on this CPU, or nil to keep OpenBLAS's own choice.
    static func preferredCore() -> String? {
        guard GEMM.coreName.lowercased() == "prescott" else { return nil }
        guard let fd = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(fd) }
        var line = [CChar](repeating: 0, count: 8192)
        while fgets(&line, Int32(line.count), fd) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard text.hasPrefix("flags") else { continue }
            let flags = Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
            if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") { return "SkylakeX" }
            if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
            return nil
        }
        return nil
    }

    /// Re-executes this process with OPENBLAS_CORETYPE set when OpenBLAS fell back to generic
    /// kernels on a CPU that has better ones. Call first thing in a command, before MPI starts.
    static func reexecWithNativeKernelsIfNeeded() {
        #if os(Linux)
        guard getenv("OPENBLAS_CORETYPE") == nil, getenv("REC_DIST_KEEP_BLAS_KERNELS") == nil,
              let core = preferredCore() else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // execv failed: keep going with the generic kernels.
        unsetenv("OPENBLAS_CORETYPE")
        #endif
    }
}
