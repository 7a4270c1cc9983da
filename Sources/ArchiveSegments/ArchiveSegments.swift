import FileIO
import Foundation
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// The archive's one contract, for every program that touches it: the
/// receiver appends to `path` and rotates it to a segment named
/// `<path>.<yyyyMMdd'T'HHmmss.ffffff'Z'>` (names sort by time); a segment is
/// *pending* until every line of it has been applied and committed, then it
/// is *verified*: moved to `applied/` beside `path`, where it is kept for the
/// retention period and then deleted. `applier --replay-archive` does the
/// replaying, verifying and pruning; pipeline.sh only calls it.
///
/// Only files named exactly like a segment of `path` are ever moved or
/// deleted, whatever `path` is called and wherever it lives.
public struct ArchiveSegments: Sendable {
    /// The live archive file (`ARCHIVE_PATH`).
    public let path: String
    public var directory: String { Self.parent(path) }
    public var baseName: String { (path as NSString).lastPathComponent }
    /// Where verified segments are kept: beside the archive (one file system, so moving is a rename).
    public var appliedDirectory: String { directory + "/applied" }

    public init(path: String) {
        self.path = path
    }

    /// One rotated file of the archive.
    public struct Segment: Equatable, Sendable, CustomStringConvertible {
        public var path: String
        /// When it was rotated (or sealed): the time in its name.
        public var rotatedAt: Timestamp
        public var description: String { path }
    }

    /// `20261125T065300.123456Z`: sorts like the time it names.
    public static func suffix(_ time: Timestamp) -> String {
        var canonical = Array(time.canonical.utf8)  // 2026-11-25T06:53:00.123456Z
        canonical.removeAll { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ":") }
        return String(decoding: canonical, as: UTF8.self)
    }

    /// The time a segment suffix names; nil for anything else.
    public static func time(ofSuffix suffix: Substring) -> Timestamp? {
        let bytes = Array(suffix.utf8)
        // yyyyMMddTHHmmss.ffffffZ
        guard bytes.count == 23, bytes[8] == UInt8(ascii: "T"), bytes[15] == UInt8(ascii: "."), bytes[22] == UInt8(ascii: "Z") else { return nil }
        let digits = Array(0..<8) + Array(9..<15) + Array(16..<22)
        guard digits.allSatisfy({ bytes[$0] >= UInt8(ascii: "0") && bytes[$0] <= UInt8(ascii: "9") }) else { return nil }
        let s = String(decoding: bytes, as: UTF8.self)
        func part(_ from: Int, _ count: Int) -> Substring { s.dropFirst(from).prefix(count) }
        let text = "\(part(0, 4))-\(part(4, 2))-\(part(6, 2))T\(part(9, 2)):\(part(11, 2)):\(part(13, 2)).\(part(16, 6))Z"
        guard let time = try? Timestamp(parsing: text), suffix == Substring(Self.suffix(time)) else { return nil }
        return time
    }

    /// The name the archive is rotated to at `time`.
    public func segmentPath(rotatedAt time: Timestamp) -> String {
        path + "." + Self.suffix(time)
    }

    /// Segments not yet verified, oldest first.
    public func pending() throws -> [Segment] {
        try segments(in: directory)
    }

    /// Verified segments still kept, oldest first.
    public func applied() throws -> [Segment] {
        try segments(in: appliedDirectory)
    }

    private func segments(in directory: String) throws -> [Segment] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch CocoaError.fileReadNoSuchFile {
            return []
        } catch {
            throw SystemCallError(operation: "list", path: directory, errno: errno == 0 ? EIO : errno)
        }
        let prefix = baseName + "."
        return names.compactMap { name -> Segment? in
            guard name.hasPrefix(prefix), let time = Self.time(ofSuffix: name.dropFirst(prefix.count)) else { return nil }
            var info = stat()
            let segmentPath = directory + "/" + name
            guard lstat(segmentPath, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
            return Segment(path: segmentPath, rotatedAt: time)
        }.sorted { ($0.rotatedAt, $0.path) < ($1.rotatedAt, $1.path) }
    }

    /// Makes the live file a segment (when it holds anything), so it can be
    /// replayed; only while no receiver writes it (pipeline.sh, before the
    /// receiver starts). The receiver starts a new file.
    @discardableResult
    public func seal(at time: Timestamp = .now()) throws -> Segment? {
        var info = stat()
        guard stat(path, &info) == 0, info.st_size > 0 else { return nil }
        let segment = Segment(path: segmentPath(rotatedAt: time), rotatedAt: time)
        guard access(segment.path, F_OK) != 0 else { throw SystemCallError(operation: "seal", path: segment.path, errno: EEXIST) }
        guard rename(path, segment.path) == 0 else { throw SystemCallError(operation: "rename", path: path, errno: errno) }
        try syncDirectory(directory)
        return segment
    }

    /// Moves a segment whose every line is committed to `applied/`, durably.
    public func markVerified(_ segment: Segment) throws {
        if mkdir(appliedDirectory, 0o750) != 0 && errno != EEXIST {
            throw SystemCallError(operation: "mkdir", path: appliedDirectory, errno: errno)
        }
        let target = appliedDirectory + "/" + (segment.path as NSString).lastPathComponent
        guard rename(segment.path, target) == 0 else { throw SystemCallError(operation: "rename", path: segment.path, errno: errno) }
        try syncDirectory(appliedDirectory)
        try syncDirectory(Self.parent(segment.path))
    }

    /// Deletes verified segments rotated more than `days` days before `now`;
    /// returns them. `days` 0 keeps every one.
    @discardableResult
    public func prune(retentionDays days: Int, now: Timestamp = .now()) throws -> [Segment] {
        guard days > 0 else { return [] }
        let cutoff = now.microsecondsSinceEpoch - Int64(days) * 86_400_000_000
        let expired = try applied().filter { $0.rotatedAt.microsecondsSinceEpoch < cutoff }
        for segment in expired where unlink(segment.path) != 0 && errno != ENOENT {
            throw SystemCallError(operation: "unlink", path: segment.path, errno: errno)
        }
        if !expired.isEmpty { try syncDirectory(appliedDirectory) }
        return expired
    }

    private static func parent(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return directory.isEmpty ? "." : directory
    }
}
