import Testing
@testable import RecCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Learning-rate schedules and clipping")
struct ScheduleAndClippingTests {
    func rates(_ s: LearningRateSchedule, total: Int, base: Float = 1) -> [Double] {
        (0..<total).map { Double(s.rate(base: base, step: $0, totalSteps: total)) }
    }

    @Test func constantIsConstant() {
        #expect(rates(LearningRateSchedule(), total: 5, base: 0.3) == Array(repeating: Double(Float(0.3)), count: 5))
    }

    @Test func warmupRisesLinearlyToTheBase() {
        let r = rates(LearningRateSchedule(decay: .constant, warmupSteps: 4), total: 8, base: 2)
        #expect(r == [0.5, 1, 1.5, 2, 2, 2, 2, 2])
    }

    /// Hugging Face's get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup, written
    /// out: after warmup, factor (T - s) / (T - w), and 0.5 (1 + cos(pi (s - w) / (T - w))).
    @Test func linearAndCosineMatchTheirFormulas() {
        let w = 3, total = 13
        let linear = rates(LearningRateSchedule(decay: .linear, warmupSteps: w), total: total)
        let cosine = rates(LearningRateSchedule(decay: .cosine, warmupSteps: w), total: total)
        for s in w..<total {
            let q = Double(s - w) / Double(total - w)
            #expect(abs(linear[s] - Double(total - s) / Double(total - w)) < 1e-6, "linear step \(s)")
            #expect(abs(cosine[s] - 0.5 * (1 + cos(Double.pi * q))) < 1e-6, "cosine step \(s)")
        }
        #expect(linear[w] == 1 && cosine[w] == 1)
        #expect(zip(linear.dropFirst(w), linear.dropFirst(w + 1)).allSatisfy { $0 > $1 })
        var floor = LearningRateSchedule(decay: .cosine)
        floor.minRatio = 0.1
        let f = rates(floor, total: 1000)
        #expect(f.min()! >= 0.1 - 1e-6 && f.min()! < 0.1001)
    }

    @Test func stepDecayMultipliesEveryInterval() {
        var s = LearningRateSchedule(decay: .step, warmupSteps: 2)
        s.decayEvery = 3
        s.decayFactor = 0.5
        let r = rates(s, total: 11, base: 8)
        #expect(r == [4, 8, 8, 8, 8, 4, 4, 4, 2, 2, 2])
    }

    @Test func clippingMatchesANaiveReference() {
        var rng = RNG(seed: 31, stream: 1)
        var dense = (0..<1000).map { _ in Float(rng.normal()) }
        var rows = (0..<77).map { _ in Float(rng.normal() * 3) }
        let all = (dense + rows).map(Double.init)
        let norm = all.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let original = (dense, rows)
        // Above the norm: nothing changes, bit for bit.
        let measured = dense.withUnsafeMutableBufferPointer { d in
            rows.withUnsafeMutableBufferPointer { r in GradientClipping.clip(d, r, maxNorm: Float(norm * 2)) }
        }
        #expect(abs(measured - norm) < 1e-6 * norm, "Float partial sums: about 1e-7 relative")
        #expect(dense == original.0 && rows == original.1)
        // Below: scaled by maxNorm / (norm + 1e-6) (PyTorch's clip_grad_norm_), both parts alike.
        let maxNorm: Float = 5
        dense.withUnsafeMutableBufferPointer { d in
            rows.withUnsafeMutableBufferPointer { r in _ = GradientClipping.clip(d, r, maxNorm: maxNorm) }
        }
        let factor = Double(maxNorm) / (norm + 1e-6)
        for (x, x0) in zip(dense + rows, original.0 + original.1) {
            #expect(abs(Double(x) - Double(x0) * factor) <= 1e-6 * abs(Double(x0) * factor) + 1e-9)
        }
        let after = (dense + rows).map(Double.init).reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(abs(after - 5) < 1e-4)
    }

    @Test func sparsePairsAppend() {
        let a = SparseGradient(capacity: 5, dim: 2), b = SparseGradient(capacity: 3, dim: 2)
        b.count = 2
        b.rows[0] = 7; b.rows[1] = 9
        for i in 0..<4 { b.values[i] = Float(i) }
        a.append(b)
        a.append(b)
        #expect(a.count == 4)
        #expect((0..<4).map { a.rows[$0] } == [7, 9, 7, 9])
        #expect((0..<8).map { a.values[$0] } == [0, 1, 2, 3, 0, 1, 2, 3])
    }
}
