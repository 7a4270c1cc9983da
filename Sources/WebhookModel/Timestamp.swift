#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An instant with microsecond precision (PostgreSQL's), kept as microseconds
/// since 1970-01-01T00:00:00Z. Parsing accepts every ISO 8601 / RFC 3339 form
/// the webhook contract allows; formatting always gives the canonical
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var microsecondsSinceEpoch: Int64

    public init(microsecondsSinceEpoch: Int64) {
        self.microsecondsSinceEpoch = microsecondsSinceEpoch
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.microsecondsSinceEpoch < rhs.microsecondsSinceEpoch
    }

    /// 0001-01-01T00:00:00Z, the earliest instant the canonical form can write.
    public static let minimum = Timestamp(microsecondsSinceEpoch: -62_135_596_800_000_000)
    /// 9999-12-31T23:59:59.999999Z, the latest.
    public static let maximum = Timestamp(microsecondsSinceEpoch: 253_402_300_799_999_999)

    public var description: String { canonical }

    /// This instant moved by whole seconds (negative: earlier).
    public func adding(seconds: Int) -> Timestamp {
        Timestamp(microsecondsSinceEpoch: microsecondsSinceEpoch + Int64(seconds) * 1_000_000)
    }

    /// The current time, rounded down to the microsecond.
    public static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(microsecondsSinceEpoch: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000)
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
    public var canonical: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(27)
        appendCanonical(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the canonical form to a byte buffer without allocating a String.
    public func appendCanonical(to out: inout [UInt8]) {
        let micros = microsecondsSinceEpoch
        var seconds = micros / 1_000_000
        var fraction = micros % 1_000_000
        if fraction < 0 { fraction += 1_000_000; seconds -= 1 }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 { secondOfDay += 86_400; days -= 1 }
        let (year, month, day) = Self.civil(fromDays: days)
        func put(_ value: Int64, _ width: Int) {
            // Digits most significant first, without a temporary array.
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var v = value
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: v / divisor % 10))
                v %= divisor
                divisor /= 10
            }
        }
        put(year, 4); out.append(UInt8(ascii: "-"))
        put(month, 2); out.append(UInt8(ascii: "-"))
        put(day, 2); out.append(UInt8(ascii: "T"))
        put(secondOfDay / 3600, 2); out.append(UInt8(ascii: ":"))
        put(secondOfDay / 60 % 60, 2); out.append(UInt8(ascii: ":"))
        put(secondOfDay % 60, 2); out.append(UInt8(ascii: "."))
        put(fraction, 6); out.append(UInt8(ascii: "Z"))
    }

    // Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).
    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (month <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, month, day)
    }

    static func daysInMonth(_ year: Int64, _ month: Int64) -> Int64 {
        switch month {
        case 1, 3, 5, 7, 8, 10, 12: return 31
        case 4, 6, 9, 11: return 30
        default:
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            return leap ? 29 : 28
        }
    }
}

/// Why a string is not an accepted date-time.
public struct TimestampParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension Timestamp {
    /// Parses `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,9}][Z|z|±HH:MM|±HHMM]`; no offset
    /// means UTC. More than six fractional digits are rounded half-up to the
    /// microsecond. Impossible dates (February 30, hour 24) are refused.
    public init(parsing text: String) throws(TimestampParseError) {
        var copy = text
        let result = copy.withUTF8 { buffer in Result { () throws(TimestampParseError) in try Timestamp.parse(buffer) } }
        self = try result.get()
    }

    static func parse(_ s: UnsafeBufferPointer<UInt8>) throws(TimestampParseError) -> Timestamp {
        func fail(_ message: String) -> TimestampParseError {
            TimestampParseError(message: message)
        }
        var i = 0
        func digits(_ count: Int, _ what: String) throws(TimestampParseError) -> Int64 {
            guard s.count - i >= count else { throw fail("expected \(count) digits for the \(what)") }
            var value: Int64 = 0
            for _ in 0..<count {
                let b = s[i]
                guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else {
                    throw fail("expected \(count) digits for the \(what)")
                }
                value = value * 10 + Int64(b - UInt8(ascii: "0"))
                i += 1
            }
            return value
        }
        func expect(_ byte: UInt8, _ what: String) throws(TimestampParseError) {
            guard i < s.count, s[i] == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))' \(what)") }
            i += 1
        }

        let year = try digits(4, "year")
        try expect(UInt8(ascii: "-"), "after the year")
        let month = try digits(2, "month")
        try expect(UInt8(ascii: "-"), "after the month")
        let day = try digits(2, "day")
        guard i < s.count, s[i] == UInt8(ascii: "T") || s[i] == UInt8(ascii: "t") || s[i] == UInt8(ascii: " ") else {
            throw fail("expected 'T' or a space between date and time")
        }
        i += 1
        let hour = try digits(2, "hour")
        try expect(UInt8(ascii: ":"), "after the hour")
        let minute = try digits(2, "minute")
        try expect(UInt8(ascii: ":"), "after the minute")
        let second = try digits(2, "second")

        var nanos: Int64 = 0
        if i < s.count, s[i] == UInt8(ascii: ".") || s[i] == UInt8(ascii: ",") {
            i += 1
            var count = 0
            while i < s.count, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9") {
                count += 1
                guard count <= 9 else { throw fail("more than 9 fractional digits") }
                nanos = nanos * 10 + Int64(s[i] - UInt8(ascii: "0"))
                i += 1
            }
            guard count > 0 else { throw fail("expected digits after the decimal point") }
            for _ in count..<9 { nanos *= 10 }
        }

        var offsetSeconds: Int64 = 0
        if i < s.count {
            let sign = s[i]
            if sign == UInt8(ascii: "Z") || sign == UInt8(ascii: "z") {
                i += 1
            } else if sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                i += 1
                let oh = try digits(2, "offset hours")
                if i < s.count, s[i] == UInt8(ascii: ":") { i += 1 }
                let om = try digits(2, "offset minutes")
                guard oh <= 23, om <= 59 else { throw fail("UTC offset out of range") }
                offsetSeconds = (oh * 3600 + om * 60) * (sign == UInt8(ascii: "-") ? -1 : 1)
            } else {
                throw fail("expected 'Z', '+HH:MM' or '-HH:MM' after the time")
            }
        }
        guard i == s.count else { throw fail("unexpected characters after the date-time") }

        guard year >= 1 else { throw fail("year out of range") }
        guard month >= 1, month <= 12 else { throw fail("month out of range") }
        guard day >= 1, day <= daysInMonth(year, month) else { throw fail("day out of range for the month") }
        guard hour <= 23 else { throw fail("hour out of range") }
        guard minute <= 59 else { throw fail("minute out of range") }
        guard second <= 59 else { throw fail("second out of range") }

        let days = Timestamp.days(fromCivil: year, month, day)
        let localSeconds = days * 86_400 + hour * 3600 + minute * 60 + second
        let micros = (localSeconds - offsetSeconds) * 1_000_000 + (nanos + 500) / 1000
        let result = Timestamp(microsecondsSinceEpoch: micros)
        guard result >= .minimum, result <= .maximum else { throw fail("date-time out of range (years 0001 to 9999 UTC)") }
        return result
    }
}
