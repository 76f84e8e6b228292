#!/usr/bin/env node
// Committed (not built) so that npm can link the bin at install time, before the
// `prepare` script has built dist/.
import '../dist/cli/main.js'
