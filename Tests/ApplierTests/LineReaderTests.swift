import Foundation
import Testing
import TestSupport
@testable import ApplierCore

/// The applier's reader hands lines out where it read them (`LineBytes` in
/// its chunks): whatever it reads later, and whichever lines are still held,
/// every line must come out as the input had it, and stay so.
@Suite struct LineReaderTests {
    /// What the reader should make of `data`: each line (`\r\n` or `\n`; a
    /// last one without either), or its first 1,024 bytes when it is longer than `maxLineBytes`.
    static func expected(_ data: [UInt8], maxLineBytes: Int) -> [(line: [UInt8]?, prefix: [UInt8]?)] {
        var lines = data.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        if lines.last?.isEmpty == true { lines.removeLast() }
        return lines.map { line in
            if line.count > maxLineBytes { return (nil, Array(line.prefix(1024))) }
            return (line.last == 0x0D ? Array(line.dropLast()) : line, nil)
        }
    }

    @Test(arguments: [1, 2, 3, 4])
    func linesComeOutWholeWhicheverAreStillHeld(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        let maxLineBytes = 6_000
        var data: [UInt8] = []
        for n in 0..<3_000 {
            // Mostly webhook-sized lines; some empty, some past the chunk's size, some past the limit.
            let length = switch Int.random(in: 0..<100, using: &generator) {
            case 0..<3: 0
            case 3..<8: Int.random(in: 4_000...maxLineBytes, using: &generator)
            case 8..<11: Int.random(in: maxLineBytes + 1...20_000, using: &generator)
            default: Int.random(in: 1...400, using: &generator)
            }
            data += (0..<length).map { UInt8(32 + ($0 * 7 + n) % 90) }
            if Bool.random(using: &generator) && Int.random(in: 0..<10, using: &generator) == 0 { data.append(0x0D) }
            data.append(0x0A)
        }
        data += Array("last line without a newline".utf8)
        let want = Self.expected(data, maxLineBytes: maxLineBytes)

        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/input"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(data)))
        let fd = open(path, O_RDONLY)
        #expect(fd >= 0)
        defer { close(fd) }

        // The smallest chunk (4 KiB): lines cross chunk ends all the time.
        let reader = LineReader(fd: fd, maxLineBytes: maxLineBytes, bufferSize: 4096)
        var held: [(index: Int, bytes: LineBytes)] = [], kept: [(index: Int, bytes: LineBytes)] = []
        var index = 0
        while true {
            let item = try reader.next(timeoutMilliseconds: -1)
            if case .endOfFile = item { break }
            guard index < want.count else {
                Issue.record("more items than lines: \(item)")
                break
            }
            switch item {
            case .line(let number, let bytes, _):
                #expect(number == index + 1)
                #expect(Array(bytes) == want[index].line, "line \(index + 1)")
                #expect(bytes.withUnsafeBufferPointer { Array($0) } == want[index].line, "line \(index + 1)")
                // Held for a while (as a batch holds its lines), or for good, or let go at once.
                switch Int.random(in: 0..<10, using: &generator) {
                case 0..<2: kept.append((index, bytes))
                case 2..<5: held.append((index, bytes))
                case 5: if !held.isEmpty { held.removeFirst(Int.random(in: 1...held.count, using: &generator)) }
                default: break
                }
            case .tooLong(let number, let prefix, _):
                #expect(number == index + 1)
                #expect(prefix == want[index].prefix, "line \(index + 1): prefix of \(prefix.count) bytes")
            default:
                Issue.record("unexpected \(item)")
            }
            index += 1
        }
        #expect(index == want.count)
        // What is still held was not written over by what came after it.
        for (index, bytes) in kept + held { #expect(Array(bytes) == want[index].line, "held line \(index + 1)") }
        #expect(kept.count > 300)
    }
}
