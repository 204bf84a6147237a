//! The terminal the live views draw on (`task watch`, `workflow watch`, `providers
//! watch`): its size, asked of the terminal itself and asked again at every redraw so
//! that a resized window is followed, and how many rows a drawn line takes once the
//! terminal wraps it, so that a redraw erases exactly what the last one drew.

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Size {
    /// What a view assumes when nothing says better: 80 columns, 24 rows.
    pub const FALLBACK: Size = Size {
        width: 80,
        height: 24,
    };
}

/// Where a live view learns the size it draws at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSource {
    /// The terminal, asked each time (see [`size`]).
    Terminal,
    /// A fixed size (tests).
    #[cfg(test)]
    Fixed(Size),
}

impl SizeSource {
    /// The size to draw at now.
    pub fn get(self) -> Size {
        match self {
            SizeSource::Terminal => size(),
            #[cfg(test)]
            SizeSource::Fixed(size) => size,
        }
    }
}

/// The size of the terminal on stdout (else stderr, else stdin), as the terminal
/// reports it (`TIOCGWINSZ`); where none does, `$COLUMNS` and `$LINES`; else
/// [`Size::FALLBACK`]. Cheap enough to call at every redraw, which is how the views
/// follow a resize.
pub fn size() -> Size {
    let asked = [libc::STDOUT_FILENO, libc::STDERR_FILENO, libc::STDIN_FILENO]
        .into_iter()
        .find_map(window_size);
    let from_env = |name: &str, fallback: usize| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(fallback)
    };
    match asked {
        Some((width, 0)) => Size {
            width,
            height: from_env("LINES", Size::FALLBACK.height),
        },
        Some((width, height)) => Size { width, height },
        None => Size {
            width: from_env("COLUMNS", Size::FALLBACK.width),
            height: from_env("LINES", Size::FALLBACK.height),
        },
    }
}

/// The (columns, rows) of the terminal open on `fd`, if it is one that knows its width.
fn window_size(fd: libc::c_int) -> Option<(usize, usize)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` through the pointer, which points at
    // one; on a descriptor that is not a terminal (or is closed) it fails with ENOTTY
    // or EBADF and writes nothing.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then(|| (usize::from(ws.ws_col), usize::from(ws.ws_row)))
}

/// How many rows a line `line_width` columns wide takes on a terminal `width` columns
/// wide, which wraps what does not fit: at least one, even for an empty line.
///
/// A line exactly as wide as the terminal takes one row: the cursor waits at its end and
/// the newline that follows does not add a row.
pub fn rows(line_width: usize, width: usize) -> usize {
    line_width.div_ceil(width.max(1)).max(1)
}

/// How many rows lines of these widths take on a terminal `width` columns wide.
pub fn total_rows(line_widths: &[usize], width: usize) -> usize {
    line_widths.iter().map(|w| rows(*w, width)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_take_as_many_rows_as_they_fill() {
        assert_eq!(rows(0, 80), 1);
        assert_eq!(rows(79, 80), 1);
        assert_eq!(rows(80, 80), 1);
        assert_eq!(rows(81, 80), 2);
        assert_eq!(rows(100, 50), 2);
        assert_eq!(rows(101, 50), 3);
        // A line drawn at 220 columns, counted after the window shrank to 50.
        assert_eq!(rows(219, 50), 5);
        assert_eq!(rows(10, 0), 10, "a zero width counts as one column");
        assert_eq!(total_rows(&[49, 50, 51, 0], 50), 5);
    }

    #[test]
    fn fixed_sizes_are_what_tests_draw_at() {
        let size = Size {
            width: 50,
            height: 10,
        };
        assert_eq!(SizeSource::Fixed(size).get(), size);
    }
}
