import Foundation
import RecCore
import RecData
import Testing

/// The raw-TSV batch source against a reference: the rows of every global batch, split over
/// ranks, are the file's rows in order, also from a resume position off the batch grid.
struct TSVBatchSourceTests {
    /// Each row of `view` as its label and first three categorical ids (they identify it).
    func rows(_ view: BatchView) -> [[UInt32]] {
        (0..<view.count).map { r in [UInt32(view.labels[r])] + (0..<3).map { view.categorical[r * view.categoricalWidth + $0] } }
    }

    @Test(arguments: [1, 2, 3])
    func globalBatchesAreTheFilesRowsInOrder(ranks: Int) throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path("synth.tsv")
        try SynthGenerator(seed: 5).write(rows: 103, to: path, probabilitiesPath: nil)
        let all = try CriteoTSV.parse(try MappedFile(path: path))
        let reference = FeatureRowsBuffer(all)
        let block = 4, g = block * ranks
        for resume in [0, g, 7] {
            let sources = try (0..<ranks).map {
                try TSVBatchSource.load(path: path, evalPath: nil, evalFraction: 0.1, rank: $0, worldSize: ranks,
                                        blockSize: block, resumeOffset: resume).source
            }
            let train = sources[0].rows
            #expect(train == 93 && sources[0].globalBatchSize == g)
            var offset = resume
            while offset < train {
                var global: [[UInt32]] = []
                var counts = Set<Int>()
                for source in sources {
                    let (view, count) = source.batch(epoch: 0, offset: offset)
                    global += rows(view)
                    counts.insert(count)
                }
                let expected = rows(reference.view(offset..<min(offset + g, train)))
                #expect(global == expected, "offset \(offset), resume \(resume)")
                #expect(counts == [expected.count] && expected.count == sources[0].globalBatchCount(offset: offset))
                offset += expected.count
            }
            #expect(sources[0].batchesLeft(from: resume) == (train - resume + g - 1) / g)
        }
    }

    @Test func tooFewRowsIsAClearError() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = try dir.write("empty.tsv", "")
        #expect(throws: NotEnoughDataError.self) {
            _ = try TSVBatchSource.load(path: path, evalPath: nil, evalFraction: 0.1, rank: 0, worldSize: 1,
                                        blockSize: 4, resumeOffset: 0)
        }
    }
}
