import Foundation
import Testing
import TestSupport
@testable import WebhookModel

/// Seeded fuzzing of the decoders, run in every test run, plus a replay of
/// the corpus libFuzzer built (fuzz/corpus, see fuzz/README.md): no input may
/// crash or hang them; each is either accepted or refused with a reason.
@Suite struct FuzzTests {
    static let seeds: [[UInt8]] = [
        #"{"event":"created","timestamp":"2025-04-01T14:23:45-04:00","metadata":{"userId":"1","id":"42","content":"Buy milk","isCompleted":false}}"#,
        #"{"event":"updated","timestamp":"2025-04-01 14:23:45.123456789+0200","metadata":{"userId":"ü\u00e9\ud83d\ude00","id":"x","content":"a\"b\\c\n","isCompleted":true},"extra":[1,2.5e-3,null,{"a":[]}]}"#,
        #"{"event":"deleted","timestamp":"2025-12-31T23:59:59Z","metadata":{"userId":"u","id":"t","content":"","isCompleted":false},"receivedAt":"2026-01-01T00:00:00.000001Z","deliveryId":"msg_1"}"#,
    ].map { Array($0.utf8) }

    static let tokens: [[UInt8]] = ["\"", "\\", "\\u", "\\ud800", "{", "}", "[", "]", ":", ",", "null", "true", "1e999", "-0", "\u{0}",
                                    "2025-02-30", "24:00:00", "+99:99", ".0000000001", "\"event\"", "\"metadata\"", "{\"a\":"].map { Array($0.utf8) }
        + [[0xFF], [0xC3], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0x0A], [0x0D]]

    static func mutate(_ input: [UInt8], _ g: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + Int(g.next() % 4)) {
            let at = bytes.isEmpty ? 0 : Int(g.next() % UInt64(bytes.count))
            switch g.next() % 6 {
            case 0 where !bytes.isEmpty: bytes[at] = UInt8(truncatingIfNeeded: g.next())
            case 1: bytes.insert(contentsOf: tokens[Int(g.next() % UInt64(tokens.count))], at: at)
            case 2 where !bytes.isEmpty: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(g.next() % 8)))
            case 3 where !bytes.isEmpty: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + Int(g.next() % 16))], at: at)
            case 4: bytes = Array(bytes.prefix(at))
            default: bytes.insert(UInt8(truncatingIfNeeded: g.next() % 128), at: at)
            }
        }
        return bytes
    }

    /// Accepted inputs round-trip through the canonical line; refused ones say why.
    static func check(_ bytes: [UInt8]) {
        do {
            let record = try Webhook.decode(bytes)
            let line = record.canonicalLine()
            #expect(line.last == 0x0A && !line.dropLast().contains(0x0A), "a canonical line is one line")
            let again = try Webhook.decode(Array(line.dropLast()))
            #expect(again == record)
        } catch {
            #expect(!error.description.isEmpty)
        }
    }

    @Test func mutatedWebhooksAreAcceptedOrRefusedWithAReason() {
        var g = SeededGenerator(seed: 2026)
        var accepted = 0
        for _ in 0..<40_000 {
            let input = Self.mutate(Self.seeds[Int(g.next() % UInt64(Self.seeds.count))], &g)
            if (try? Webhook.decode(input)) != nil { accepted += 1 }
            Self.check(input)
        }
        #expect(accepted > 0, "some mutations stay valid, so both paths are exercised")
    }

    /// The receiver's lines are read without a document tree
    /// (`CanonicalLineReader`): whatever that reader takes, of canonical lines
    /// with random fields and of their mutations, the general path takes too,
    /// with the same result; what it leaves, the general path decides.
    @Test func theCanonicalLineReaderAgreesWithTheGeneralPath() {
        var g = SeededGenerator(seed: 23)
        // Mostly what the reader takes; now and then what it must leave (an escape, a control character).
        // (The receiver escapes DEL as a control character.)
        let plain = ["a", "Z9", " ", "é", "😀", "task-0001", "/", "\u{2028}"], odd = ["\"", "\\", "\u{0}", "\u{1F}", "\u{7F}"]
        func text(_ maxPieces: Int) -> String {
            (0..<Int(g.next() % UInt64(maxPieces + 1))).map { _ in g.next() % 20 == 0 ? odd[Int(g.next() % 5)] : plain[Int(g.next() % 8)] }.joined()
        }
        var read = 0, agreed = 0
        for round in 0..<30_000 {
            let record = StreamRecord(
                webhook: Webhook(event: WebhookEvent.allCases[Int(g.next() % 3)], timestamp: Timestamp(microsecondsSinceEpoch: Int64(g.next() % (1 << 50))),
                                 userId: text(3), taskId: g.next() % 50 == 0 ? String(repeating: "x", count: 250 + Int(g.next() % 10)) : text(3),
                                 content: text(6), isCompleted: g.next() % 2 == 0),
                receivedAt: g.next() % 2 == 0 ? Timestamp(microsecondsSinceEpoch: Int64(g.next() % (1 << 50))) : nil,
                deliveryId: g.next() % 2 == 0 ? text(2) : nil)
            var line = Array(record.canonicalLine().dropLast())
            if round % 2 == 1 { line = Self.mutate(line, &g) }
            guard let fast = line.withUnsafeBufferPointer(CanonicalLineReader.read) else { continue }
            read += 1
            let general = line.withUnsafeBufferPointer { bytes in Result { () throws(WebhookDecodingError) in try Webhook.decodeDocument(bytes) } }
            if (try? general.get()) == fast { agreed += 1 } else { Issue.record("\(general) ≠ \(fast) for \(String(decoding: line, as: UTF8.self))") }
        }
        #expect(read > 5_000 && agreed == read, "the reader took \(read) lines, the general path agreed on \(agreed)")
    }

    @Test func randomTimestampsParseToTheSameInstantOrFailWithAReason() {
        var g = SeededGenerator(seed: 7)
        let alphabet = Array("0123456789-:T tZz+.,".utf8) + [0x41, 0xFF, 0x00]
        var parsed = 0
        for _ in 0..<50_000 {
            var text = Array("2025-04-01T14:23:45.123+02:00".utf8)
            for _ in 0..<(Int(g.next() % 4)) {
                let at = Int(g.next() % UInt64(text.count + 1))
                if g.next() % 2 == 0, at < text.count { text[at] = alphabet[Int(g.next() % UInt64(alphabet.count))] }
                else { text.insert(alphabet[Int(g.next() % UInt64(alphabet.count))], at: at) }
            }
            let string = String(decoding: text, as: UTF8.self)
            do {
                let t = try Timestamp(parsing: string)
                parsed += 1
                #expect(try Timestamp(parsing: t.canonical) == t)
            } catch {
                #expect(!error.message.isEmpty)
            }
        }
        #expect(parsed > 0)
    }

    @Test func hugeAndDeeplyNestedDocumentsAreRefusedQuickly() {
        let started = Date()
        Self.check(Array(repeating: UInt8(ascii: "["), count: 200_000))
        Self.check(Array(repeating: UInt8(ascii: "{"), count: 200_000))
        Self.check(Array("[".utf8) + Array(repeating: UInt8(ascii: "1"), count: 500_000))
        Self.check(Array("\"".utf8) + Array(repeating: UInt8(ascii: "\\"), count: 500_001))
        Self.check(Array(#"{"event":"created","timestamp":"2025-04-01T14:23:45Z","metadata":{"userId":"1","id":"42","content":""#.utf8)
                   + Array(repeating: UInt8(ascii: "a"), count: 1_000_000) + Array(#"","isCompleted":false}}"#.utf8))
        #expect(Date().timeIntervalSince(started) < 10)
    }

    @Test func theCommittedFuzzCorpusStillDecodes() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fuzz/corpus/webhook")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.count >= 10, "the corpus is committed")
        for name in files {
            Self.check(Array(try Data(contentsOf: directory.appendingPathComponent(name))))
        }
    }
}
