import NIOCore

/// JetStream mode with an archive: each line is appended to the archive (and
/// fsynced) by an archive-only `StreamWriter` first, then published; a line
/// the archive refuses is never published.
final class ArchivingSink: LineSink, Sendable {
    let archive: StreamWriter
    let then: any LineSink

    init(archive: StreamWriter, then: any LineSink) {
        self.archive = archive
        self.then = then
    }

    var trouble: SinkTrouble? { then.trouble ?? archive.trouble }
    var mode: String { "archive + " + then.mode }

    func submit(_ lines: [SubmittedLine], on eventLoop: any EventLoop) {
        let next = then
        archive.submit(lines.map { line in
            SubmittedLine(bytes: line.bytes, messageId: line.messageId) { outcome in
                guard outcome == .written else { return line.completion(outcome) }
                next.submit([line], on: eventLoop)
            }
        }, on: eventLoop)
    }
}
