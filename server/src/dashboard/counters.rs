//! What a meter's counter registers measure, in words people understand.
