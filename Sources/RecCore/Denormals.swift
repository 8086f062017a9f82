#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Subnormal ("denormal") floats, and turning them off.
///
/// Adam's and momentum's state decays geometrically wherever a gradient stays zero (a dead ReLU
/// unit's weights, a bias no example moves), so after some hundreds of steps part of it reaches the
/// subnormal range, below 1.2e-38, where each x86 floating-point operation costs about a hundred
/// cycles instead of one. Measured here: the dense Adam update of dlrm's 476k parameters went from
/// about 0.6 ms to 7 ms per step once it did. Flush-to-zero (results) and denormals-are-zero
/// (inputs) make those values 0 instead: TensorFlow runs its CPU kernels this way, PyTorch offers
/// `set_flush_denormal`. The effect on training is nil in practice (the values are under 1e-38).
///
/// The mode belongs to a thread: call `flushToZero()` on each thread that trains (each rank's).
public enum Denormals {
    /// Sets flush-to-zero and denormals-are-zero for the calling thread.
    public static func flushToZero() {
        #if os(Linux) && arch(x86_64)
        var env = fenv_t()
        fegetenv(&env)
        env.__mxcsr |= 0x8040   // MXCSR.FTZ (bit 15) | MXCSR.DAZ (bit 6)
        fesetenv(&env)
        #elseif os(Linux) && arch(arm64)
        var env = fenv_t()
        fegetenv(&env)
        env.__fpcr |= 1 << 24   // FPCR.FZ
        fesetenv(&env)
        #endif
    }

    /// Whether the calling thread flushes subnormal results to zero.
    public static var areFlushed: Bool {
        var tiny = Float.leastNormalMagnitude
        withUnsafeMutablePointer(to: &tiny) { p in p.pointee = p.pointee * 0.5 }   // not constant-folded
        return tiny == 0
    }
}
