"""Ray actors (thin shells over pipeline/). Arrives with the runtime issue."""
