#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small, fast, seeded random number generator (SplitMix64 seeding a xoshiro256**).
///
/// Every random decision in rec-dist draws from an `RNG` created for one purpose (initialization,
/// synthetic data, shuffling, ...) from `(seed, purpose)`, so runs are reproducible and one
/// purpose never perturbs another's stream.
public struct RNG: RandomNumberGenerator, Sendable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    /// Creates a generator from a seed; `stream` separates independent purposes.
    public init(seed: UInt64, stream: UInt64 = 0) {
        var sm = seed &+ 0x9E37_79B9_7F4A_7C15 &* (stream &+ 1)
        s0 = RNG.splitMix(&sm); s1 = RNG.splitMix(&sm)
        s2 = RNG.splitMix(&sm); s3 = RNG.splitMix(&sm)
    }

    @inline(__always)
    static func splitMix(_ x: inout UInt64) -> UInt64 {
        let z = SplitMix64.mix(x)
        x &+= SplitMix64.gamma
        return z
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    @inline(__always)
    public mutating func nextFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    @inline(__always)
    public mutating func nextDouble() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in [low, high).
    @inline(__always)
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        low + (high - low) * nextFloat()
    }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Double {
        var u1 = nextDouble()
        while u1 <= 0 { u1 = nextDouble() }
        let u2 = nextDouble()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Uniform integer in [0, bound).
    @inline(__always)
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0)
        return Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(bound)).high)
    }
}


/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014) as
/// a stateless mixer: `mix(x)` is the generator's output for state `x`, which spreads `x` over all
/// 64 bits. Seeds `RNG`, derives per-purpose seeds, keys dropout masks and hashes short values.
public enum SplitMix64 {
    /// The generator's increment (2^64 / golden ratio, odd).
    public static let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// The output for state `x`: `x + gamma` through the two xor-shift-multiply rounds.
    @inlinable @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
