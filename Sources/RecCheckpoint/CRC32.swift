/// CRC-32, slicing-by-8: about 1-2 GB/s, enough to checksum a checkpoint as it is written and
/// verify it before it is trusted. Two polynomials: IEEE 802.3 (zlib, PNG, safetensors
/// checkpoints) and Castagnoli (CRC-32C, which TensorBoard's TFRecord framing uses).
public struct CRC32: Sendable {
    public enum Polynomial: Sendable {
        /// IEEE 802.3, as in zlib and PNG: CRC-32 of "123456789" is 0xCBF43926.
        case ieee
        /// Castagnoli (CRC-32C), as in iSCSI and TFRecord: CRC-32C of "123456789" is 0xE3069283.
        case castagnoli
    }

    public let polynomial: Polynomial
    public private(set) var value: UInt32 = 0

    public init(_ polynomial: Polynomial = .ieee) { self.polynomial = polynomial }

    static let ieeeTables = tables(reflectedPolynomial: 0xEDB8_8320)
    static let castagnoliTables = tables(reflectedPolynomial: 0x82F6_3B78)

    static func tables(reflectedPolynomial: UInt32) -> [[UInt32]] {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? reflectedPolynomial ^ (c >> 1) : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }

    /// Folds `bytes` into the checksum.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress else { return }
        var n = bytes.count
        var c = ~value
        let t = polynomial == .ieee ? CRC32.ieeeTables : CRC32.castagnoliTables
        t[0].withUnsafeBufferPointer { t0 in
        t[1].withUnsafeBufferPointer { t1 in
        t[2].withUnsafeBufferPointer { t2 in
        t[3].withUnsafeBufferPointer { t3 in
        t[4].withUnsafeBufferPointer { t4 in
        t[5].withUnsafeBufferPointer { t5 in
        t[6].withUnsafeBufferPointer { t6 in
        t[7].withUnsafeBufferPointer { t7 in
            while n >= 8 {
                let lo = p.loadUnaligned(as: UInt32.self).littleEndian ^ c
                let hi = (p + 4).loadUnaligned(as: UInt32.self).littleEndian
                c = t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)] ^ t5[Int((lo >> 16) & 0xFF)] ^ t4[Int(lo >> 24)]
                    ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)] ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
                p += 8
                n -= 8
            }
            while n > 0 {
                c = t0[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1
                n -= 1
            }
        }}}}}}}}
        value = ~c
    }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: UnsafeRawBufferPointer, _ polynomial: Polynomial = .ieee) -> UInt32 {
        var crc = CRC32(polynomial)
        crc.update(bytes)
        return crc.value
    }
}
