/// Where a training forward pass is: what makes its dropout masks. Set on the model by the
/// trainer before each training step's forward; nil (dropout off) in evaluation and prediction.
public struct TrainingContext: Sendable, Equatable {
    /// The run's seed.
    public var seed: UInt64
    /// The global optimizer step (0-based).
    public var step: Int
    /// The position in the global batch of this rank's first example (rank × batch size per rank).
    public var firstExample: Int

    public init(seed: UInt64, step: Int, firstExample: Int) {
        self.seed = seed
        self.step = step
        self.firstExample = firstExample
    }
}

/// Seeded inverted dropout whose mask is a pure function of (seed, step, example, layer, unit):
/// the same unit of the same global example at the same step is dropped whatever the number of
/// ranks, the backward pass recomputes the mask instead of storing it, and a resumed run needs
/// no extra state. A unit is kept when a 24-bit hash of those five numbers, as a fraction of
/// 2^24, is at least the rate; kept values are scaled by 1 / (1 - rate).
public enum Dropout {
    /// A layer family's stream number, from its name (FNV-1a), so two MLPs get independent masks.
    public static func stream(_ name: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return h << 8   // room for the layer index added to it
    }

    /// Whether unit `unit` of global example `example` is kept at `step` (`stream`: the layer).
    @inline(__always)
    public static func keep(seed: UInt64, stream: UInt64, step: Int, example: Int, unit: Int, rate: Float) -> Bool {
        let base = SplitMix64.mix(SplitMix64.mix(SplitMix64.mix(seed ^ stream) ^ UInt64(truncatingIfNeeded: step)) ^ UInt64(truncatingIfNeeded: example))
        return keep(base: base, unit: unit, rate: rate)
    }

    @inline(__always)
    static func keep(base: UInt64, unit: Int, rate: Float) -> Bool {
        let h = SplitMix64.mix(base ^ UInt64(truncatingIfNeeded: unit))
        return Float(h >> 40) * (1 / 16_777_216) >= rate
    }

    /// dst[b, j] = src[b, j] · mask(b, j) / (1 - rate) for a (rows, columns) tensor; rows are the
    /// examples `context.firstExample ..< + rows` of the global batch. dst may be src.
    @inline(__always)
    public static func apply(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, rows: Int, columns: Int,
                             rate: Float, context: TrainingContext, stream: UInt64) {
        let scale = 1 / (1 - rate)
        let stepHash = SplitMix64.mix(SplitMix64.mix(context.seed ^ stream) ^ UInt64(truncatingIfNeeded: context.step))
        for b in 0..<rows {
            let base = SplitMix64.mix(stepHash ^ UInt64(truncatingIfNeeded: context.firstExample + b))
            let s = src + b * columns, d = dst + b * columns
            for j in 0..<columns { d[j] = keep(base: base, unit: j, rate: rate) ? s[j] * scale : 0 }
        }
    }

    @inline(__always)
    public static func apply(_ buffer: UnsafeMutablePointer<Float>, to dst: UnsafeMutablePointer<Float>, rows: Int,
                             columns: Int, rate: Float, context: TrainingContext, stream: UInt64) {
        apply(UnsafePointer(buffer), to: dst, rows: rows, columns: columns, rate: rate, context: context, stream: stream)
    }
}
