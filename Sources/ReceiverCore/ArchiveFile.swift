import FileIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The durable, append-only NDJSON copy of every accepted line. A batch is
/// written and `fdatasync`ed before any of its requests is answered 202; a
/// batch that cannot be written whole is cut off again, so the file never
/// holds half a line.
public final class ArchiveFile: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private var size: off_t

    /// Opens (creating) the archive for appending; throws `SystemCallError`.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SystemCallError(operation: "open", path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let e = errno
            close(fd)
            throw SystemCallError(operation: "stat", path: path, errno: e)
        }
        self.fd = fd
        self.size = info.st_size
        // A torn last line from a crash mid-write is ended here, so the next line starts clean.
        if size > 0, let last = Self.lastByte(path: path), last != UInt8(ascii: "\n") {
            _ = "\n".utf8CString.withUnsafeBytes { writeFully(fd, UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
            size += 1
        }
    }

    deinit { close(fd) }

    private static func lastByte(path: String) -> UInt8? {
        let rfd = open(path, O_RDONLY | O_CLOEXEC)
        guard rfd >= 0 else { return nil }
        defer { close(rfd) }
        var byte: UInt8 = 0
        let end = lseek(rfd, -1, SEEK_END)
        guard end >= 0, read(rfd, &byte, 1) == 1 else { return nil }
        return byte
    }

    /// Appends whole lines and makes them durable. Called from the writer thread only.
    func append(_ bytes: [UInt8]) throws {
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
}
