import sharp from 'sharp';

export const THUMBNAIL_SIZE = 64;

/**
 * A small square JPEG of an image (EXIF orientation applied, centre crop, alpha over white), for
 * dashboards. JPEG's shrink-on-load keeps it cheap; null when the image cannot be decoded.
 */
export async function makeThumbnail(bytes: Uint8Array, limitInputPixels: number): Promise<Uint8Array | null> {
  try {
    return await sharp(bytes, { limitInputPixels, failOn: 'none', animated: false })
      .rotate()
      .resize(THUMBNAIL_SIZE, THUMBNAIL_SIZE, { fit: 'cover' })
      .flatten({ background: '#ffffff' })
      .jpeg({ quality: 75 })
      .toBuffer();
  } catch {
    return null;
  }
}
