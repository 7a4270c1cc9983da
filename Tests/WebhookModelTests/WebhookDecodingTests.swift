import Foundation
import Testing
@testable import WebhookModel

@Suite struct WebhookDecodingTests {
    let valid = #"{"event": "created", "timestamp": "2025-04-01T14:23:45-04:00", "metadata": {"userId": "1", "id": "42", "content": "Buy milk", "isCompleted": false}}"#

    func decode(_ text: String) throws(WebhookDecodingError) -> StreamRecord {
        try Webhook.decode(Array(text.utf8))
    }

    func issues(_ text: String) -> [FieldIssue] {
        do {
            _ = try decode(text)
            Issue.record("expected invalid fields for \(text)")
        } catch {
            if case .invalidFields(let issues) = error { return issues }
            Issue.record("expected invalid fields, got \(error)")
        }
        return []
    }

    @Test func decodesTheSpecExample() throws {
        let record = try decode(valid)
        #expect(record.webhook == Webhook(
            event: .created, timestamp: try Timestamp(parsing: "2025-04-01T18:23:45Z"),
            userId: "1", taskId: "42", content: "Buy milk", isCompleted: false))
        #expect(record.receivedAt == nil)
        #expect(record.deliveryId == nil)
    }

    @Test func writesTheCanonicalLineOfTheSpec() throws {
        var record = try decode(valid)
        record.receivedAt = try Timestamp(parsing: "2026-11-24T19:15:00.123456Z")
        record.deliveryId = "msg_2Ab"
        let line = String(decoding: record.canonicalLine(), as: UTF8.self)
        #expect(line == #"{"event":"created","timestamp":"2025-04-01T18:23:45.000000Z","metadata":{"userId":"1","id":"42","content":"Buy milk","isCompleted":false},"receivedAt":"2026-11-24T19:15:00.123456Z","deliveryId":"msg_2Ab"}"# + "\n")
    }

    @Test func canonicalLineDecodesToTheSameRecord() throws {
        let hostile = "line\nbreak \"quoted\" back\\slash \u{1}\u{1f}\u{7f} tab\t é 🦄 \u{2028}"
        let record = StreamRecord(
            webhook: Webhook(event: .updated, timestamp: Timestamp(microsecondsSinceEpoch: 1_700_000_000_123_456),
                             userId: "u/../\(hostile)", taskId: hostile, content: hostile, isCompleted: true),
            receivedAt: Timestamp(microsecondsSinceEpoch: 1), deliveryId: "id\n\"x")
        let line = record.canonicalLine()
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.dropLast().contains(UInt8(ascii: "\n")) == false)
        #expect(try Webhook.decode(Array(line)) == record)
    }

    @Test func ignoresUnknownFieldsAndAcceptsAnyOrder() throws {
        let text = #"{"extra": [1, {"x": null}], "metadata": {"isCompleted": true, "content": "", "id": "7", "userId": "u", "more": 1.5e3}, "timestamp": "2025-04-01 14:23:45.5", "event": "updated"}"#
        let record = try decode(text)
        #expect(record.webhook.event == .updated)
        #expect(record.webhook.content == "")
        #expect(record.webhook.isCompleted)
    }

    @Test func listsEveryProblemWithItsPath() {
        let found = issues(#"{"event": 5, "timestamp": "2025-02-30T00:00:00Z", "metadata": {"userId": "", "id": 42, "isCompleted": "yes"}}"#)
        #expect(found.map(\.loc) == [["event"], ["timestamp"], ["metadata", "userId"], ["metadata", "id"], ["metadata", "content"], ["metadata", "isCompleted"]])
        #expect(found.last?.msg == "expected a boolean, got a string")
    }

    @Test func requiresMetadataToBeAnObject() {
        #expect(issues(#"{"event": "created", "timestamp": "2025-04-01T00:00:00Z", "metadata": []}"#).map(\.loc) == [["metadata"]])
        #expect(issues(#"{"event": "created", "timestamp": "2025-04-01T00:00:00Z"}"#).map(\.msg) == ["field required"])
        #expect(issues("[1,2]").map(\.loc) == [[]])
    }

    @Test func limitsIdentifiersTo256Bytes() throws {
        let ok = String(repeating: "é", count: 128)
        let tooLong = ok + "x"
        _ = try decode(valid.replacingOccurrences(of: #""id": "42""#, with: #""id": "\#(ok)""#))
        #expect(issues(valid.replacingOccurrences(of: #""userId": "1""#, with: #""userId": "\#(tooLong)""#)).map(\.loc) == [["metadata", "userId"]])
    }

    @Test func unknownEventAloneIsItsOwnError() {
        #expect(throws: WebhookDecodingError.unknownEvent("exploded")) {
            try decode(valid.replacingOccurrences(of: "created", with: "exploded"))
        }
        // With other problems, it is listed among them.
        let found = issues(#"{"event": "exploded", "timestamp": "x", "metadata": {"userId": "1", "id": "1", "content": "", "isCompleted": false}}"#)
        #expect(found.map(\.loc) == [["event"], ["timestamp"]])
    }

    @Test(arguments: [
        "", "{", "{\"event\":", "{\"a\":1,}", "[1 2]", "{\"a\" 1}", "nul", "{\"a\":tru}", "01", "1.", "-", "1e",
        "{\"a\":\"\\x\"}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00x\"}", "{\"a\":\"tab\there\"}", "{} {}", "{}x",
        String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
    ])
    func refusesMalformedJSON(text: String) {
        do {
            _ = try decode(text)
            Issue.record("accepted \(text)")
        } catch {
            guard case .malformedJSON = error else { Issue.record("wrong error \(error)"); return }
        }
    }

    @Test func refusesInvalidUTF8AndNULBytes() {
        var bytes = Array(valid.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "B"))!
        bytes[at] = 0xFF
        #expect(throws: WebhookDecodingError.self) { try Webhook.decode(bytes) }
        var nul = Array(valid.utf8)
        nul[at] = 0
        #expect(throws: WebhookDecodingError.self) { try Webhook.decode(nul) }
    }

    @Test func refusesEscapedNULInStrings() {
        let text = valid.replacingOccurrences(of: "Buy milk", with: "Buy\\u0000milk")
        #expect(issues(text).map(\.loc) == [["metadata", "content"]])
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let value = try JSONParser.parse(Array(#"{"s": "a\u00e9\ud83e\udd84\n\/\"", "n": -0.5e-3, "b": [true, false, null]}"#.utf8))
        #expect(value["s"] == .string("aé🦄\n/\""))
        #expect(value["n"] == .number("-0.5e-3"))
        #expect(value["b"] == .array([.bool(true), .bool(false), .null]))
    }

    @Test func reportsTheOffsetOfMalformedJSON() {
        #expect(throws: JSONSyntaxError(offset: 6, message: "invalid literal")) { try JSONParser.parse(Array(#"{"a": tru}"#.utf8)) }
    }
}
