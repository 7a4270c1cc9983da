import ArchiveSegments
import FileIO
import Foundation
import Logging
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// The durable, append-only NDJSON copy of every accepted line. A batch is
/// written and `fdatasync`ed before any of its requests is answered 202; a
/// batch that cannot be written whole is cut off again, so the file never
/// holds half a line.
///
/// The archive rotates: before a batch that would take it past `rotateBytes`,
/// or the first batch of a new UTC day, the file is renamed to a segment
/// (`ArchiveSegments`: `<path>.<yyyyMMdd'T'HHmmss.ffffff'Z'>`) and a new one
/// is started. Rotated segments are complete and never written again, so an
/// operator (or pipeline.sh) can verify, replay or delete them while the
/// receiver runs.
public final class ArchiveFile: @unchecked Sendable {
    public let path: String
    /// Rotate before the file would pass this many bytes; 0: never by size.
    public let rotateBytes: Int
    /// Rotate at the first write of each new UTC day.
    public let rotateDaily: Bool
    private let logger: Logger
    private var fd: Int32
    private var size: off_t
    /// The UTC day (days since 1970) the current segment was last written on.
    private var segmentDay: Int64

    /// Opens (creating) the archive for appending; throws `SystemCallError`.
    public init(path: String, rotateBytes: Int = 0, rotateDaily: Bool = false, logger: Logger = Logger(label: "archive")) throws {
        self.path = path
        self.rotateBytes = rotateBytes
        self.rotateDaily = rotateDaily
        self.logger = logger
        (fd, size, segmentDay) = try Self.open(path)
    }

    deinit { close(fd) }

    private static func open(_ path: String) throws -> (Int32, off_t, Int64) {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SystemCallError(operation: "open", path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let e = errno
            close(fd)
            throw SystemCallError(operation: "stat", path: path, errno: e)
        }
        var size = info.st_size
        // A torn last line from a crash mid-write is ended here, so the next line starts clean.
        if size > 0, let last = lastByte(path: path), last != UInt8(ascii: "\n") {
            _ = "\n".utf8CString.withUnsafeBytes { writeFully(fd, UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
            size += 1
        }
        let day = size > 0 ? Int64(info.st_mtim.tv_sec) / 86_400 : Timestamp.now().microsecondsSinceEpoch / 86_400_000_000
        return (fd, size, day)
    }

    private static func lastByte(path: String) -> UInt8? {
        let rfd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard rfd >= 0 else { return nil }
        defer { close(rfd) }
        var byte: UInt8 = 0
        let end = lseek(rfd, -1, SEEK_END)
        guard end >= 0, read(rfd, &byte, 1) == 1 else { return nil }
        return byte
    }

    /// Appends whole lines and makes them durable. Called from the writer thread only.
    func append(_ bytes: [UInt8], now: Timestamp = .now()) throws {
        let today = now.microsecondsSinceEpoch / 86_400_000_000
        if size > 0 && ((rotateBytes > 0 && Int(size) + bytes.count > rotateBytes) || (rotateDaily && today != segmentDay)) {
            rotate(now)
        }
        segmentDay = today
        let result = bytes.withUnsafeBytes { writeFully(fd, $0) }
        if result == 0 && fdatasync(fd) == 0 {
            size += off_t(bytes.count)
            return
        }
        let error = result != 0 ? result : errno
        // Take back whatever part of the batch reached the file.
        _ = ftruncate(fd, size)
        throw SystemCallError(operation: result != 0 ? "write" : "fsync", path: path, errno: error)
    }

    /// Renames the current segment aside and starts a new one. A failure is
    /// logged and the current file kept: rotation must never cost a webhook.
    private func rotate(_ now: Timestamp) {
        let rotated = ArchiveSegments(path: path).segmentPath(rotatedAt: now)
        guard rename(path, rotated) == 0 else {
            logger.error("archive rotation failed; appending to the current file", metadata: [
                "error": "\(SystemCallError(operation: "rename", path: path, errno: errno))",
            ])
            return
        }
        let directory = ArchiveSegments(path: path).directory
        // Best effort, as before: a failure here must never cost a webhook.
        try? syncDirectory(directory)
        do {
            let (newFD, newSize, day) = try Self.open(path)
            close(fd)
            (fd, size, segmentDay) = (newFD, newSize, day)
            try? syncDirectory(directory)
            logger.info("archive rotated", metadata: ["segment": "\(rotated)"])
        } catch {
            // Keep writing to the renamed file: nothing is lost, it only grows on.
            logger.error("cannot start a new archive segment; appending to the rotated one", metadata: ["error": "\(error)"])
        }
    }
}
