// Placeholder until this suite's first test lands.
