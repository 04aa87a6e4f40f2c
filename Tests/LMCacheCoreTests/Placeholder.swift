import Testing

@Test("placeholder for LMCacheCore") func placeholder() { #expect(1 + 1 == 2) }
