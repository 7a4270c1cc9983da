// Compiled together with Sources/WebhookModel into one module (see run.sh),
// so it calls the decoders directly.

/// One libFuzzer input: the webhook decoder (which runs the JSON parser and
/// the timestamp parser) and, for text, the timestamp parser alone. Any crash,
/// hang or sanitizer report is a finding; an accepted webhook must survive a
/// round trip through its canonical line.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWebhook(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    do {
        let record = try Webhook.decode(bytes)
        let line = record.canonicalLine()
        let again = try Webhook.decode(Array(line.dropLast()))
        precondition(again == record, "canonical round trip changed the webhook")
        precondition(!line.dropLast().contains(0x0A), "a canonical line holds a newline")
    } catch {
        precondition(!error.description.isEmpty, "a refusal without a reason")
    }
    if let text = String(validating: bytes, as: UTF8.self), let t = try? Timestamp(parsing: text) {
        precondition((try? Timestamp(parsing: t.canonical)) == t, "timestamp round trip")
    }
    return 0
}
