//! Capture files: writer, reader, format (issue 5).
