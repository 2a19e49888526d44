//! A site's power curve (15-minute means summed over its site meters or top-level meters).
