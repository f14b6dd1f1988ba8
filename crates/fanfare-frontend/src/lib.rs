//! fanfare-frontend
