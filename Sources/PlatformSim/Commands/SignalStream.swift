import Dispatch
import Foundation
import Synchronization

/// POSIX signals as an async sequence, through DispatchSource (the default action of each signal
/// is switched off while the stream exists, so SIGTERM does not kill the process before we clean up).
enum SignalStream {
    static func make(_ signals: [Int32]) -> AsyncStream<Int32> {
        AsyncStream { continuation in
            let holder = SourceHolder()
            for number in signals {
                signal(number, SIG_IGN)
                holder.install(number) { continuation.yield(number) }
            }
            continuation.onTermination = { _ in holder.cancel() }
        }
    }

    /// Keeps the sources alive for the stream's lifetime.
    private final class SourceHolder: Sendable {
        private let queue = DispatchQueue(label: "sonde-sim.signals")
        private let sources = Mutex<[any DispatchSourceSignal]>([])

        func install(_ number: Int32, handler: @escaping @Sendable () -> Void) {
            sources.withLock { sources in
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler(handler: handler)
                source.resume()
                sources.append(source)
            }
        }

        func cancel() {
            sources.withLock { sources in
                for source in sources { source.cancel() }
                sources.removeAll()
            }
        }
    }
}

/// Unbuffered writes to stdout/stderr, so a parent process sees each line as soon as it is written.
enum Console {
    static func out(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    static func err(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
}
