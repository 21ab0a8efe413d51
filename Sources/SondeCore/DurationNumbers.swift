/// `Duration` as plain numbers, in one place: Swift's `Duration` offers only `components`, and
/// every module needs seconds or milliseconds for arithmetic, timings, logs and deadlines.
extension Duration {
    /// Seconds as a Double (jitter, offsets, rates, `TimeInterval`s).
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }

    /// Milliseconds as a Double (timings).
    public var milliseconds: Double {
        let (s, atto) = components
        return Double(s) * 1000 + Double(atto) / 1e15
    }

    /// Whole milliseconds, rounded towards zero (log fields, JSON, SQL).
    public var wholeMilliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }

    /// Whole nanoseconds, rounded towards zero (NIO's deadlines).
    public var wholeNanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// `value` seconds, to the nanosecond.
    public static func seconds(double value: Double) -> Duration {
        .nanoseconds(Int64((value * 1e9).rounded()))
    }
}
